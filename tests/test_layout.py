"""Hidden-state layouts: where a block takes its states and in what order it returns them.

A toy whose double blocks take keyword-only ``hidden_states=`` / ``encoder_hidden_states=`` and
return (text, image), as Qwen-Image's do, must give the probe, parallel steps and the fast sweep
exactly what the Flux-shaped toy with the same weights gives.
"""

import dataclasses

import numpy as np
import pytest
import torch

from dit_layer_lab.core.executor import planned_order
from dit_layer_lab.core.experiments.fast_sweep import FastSweep, resume
from dit_layer_lab.core.experiments.sweep import variants, windows
from dit_layer_lab.core.families import Layout
from dit_layer_lab.core.plan import parse_steps
from dit_layer_lab.core.probe import Probe
from dit_layer_lab.core.rewrite import LayerPlan

from dit_layer_lab.tests.toy_dit import TEXT_FIRST, TOY, TextFirstDiT, ToyDiT, inputs

TOY = dataclasses.replace(TOY, hidden_states={"double_blocks": Layout.of(img="image", txt="text"),
                                              "single_blocks": Layout.of(x="text+image")})
QWEN_LIKE = Layout.of(hidden_states="image", encoder_hidden_states="text", returns=("text", "image"))
PLANNED = {"double_blocks": parse_steps("0, [1-3], 4*2", 5), "single_blocks": parse_steps("5-3, [0-1]*2", 6)}


def test_states_are_found_by_keyword_or_by_position_and_returned_in_their_order():
    img, txt = torch.ones(1), torch.zeros(1)
    assert QWEN_LIKE.inputs((), {"hidden_states": img, "encoder_hidden_states": txt, "temb": 3}) == {
        "image": img, "text": txt}
    assert QWEN_LIKE.inputs((img, txt), {}) == {"image": img, "text": txt}
    assert QWEN_LIKE.outputs((txt, img)) == {"text": txt, "image": img}
    assert QWEN_LIKE.parts == ("text", "image")
    assert Layout.of(x="text+image").outputs(img) == {"text+image": img}
    args, kwargs = QWEN_LIKE.with_inputs((), {"hidden_states": img, "encoder_hidden_states": txt, "temb": 3},
                                         {"image": txt, "text": img})
    assert args == () and kwargs == {"hidden_states": txt, "encoder_hidden_states": img, "temb": 3}
    args, kwargs = QWEN_LIKE.with_inputs((img, txt, 3), {}, {"text": img})
    assert args == (img, img, 3) and kwargs == {}


def test_states_passed_as_one_tuple_are_parts_of_their_own():
    video, audio, other = torch.ones(1), torch.zeros(1), torch.full((1,), 2.0)
    layout = Layout.of(x=("video", "audio"))
    assert layout.parts == ("video", "audio")
    assert layout.inputs(((video, audio),), {"v_context": 1}) == {"video": video, "audio": audio}
    assert layout.inputs((), {"x": (video, audio)}) == {"video": video, "audio": audio}
    assert layout.outputs((video, audio)) == {"video": video, "audio": audio}
    args, kwargs = layout.with_inputs(((video, audio),), {"v_context": 1}, {"audio": other})
    assert args == ((video, other),) and kwargs == {"v_context": 1}
    args, kwargs = layout.with_inputs((), {"x": (video, audio)}, {"video": other, "audio": video})
    assert args == () and kwargs == {"x": (other, video)}
    with pytest.raises(TypeError, match=r"'x' input is not a tuple of 2 states \(video, audio\)"):
        layout.inputs((video,), {})


def test_a_missing_state_or_a_wrong_return_is_named():
    with pytest.raises(TypeError, match="without its 'encoder_hidden_states' input"):
        QWEN_LIKE.inputs((), {"hidden_states": torch.ones(1)})
    with pytest.raises(TypeError, match=r"returned 1 values; expected 2 \(text, image\)"):
        QWEN_LIKE.outputs(torch.ones(1))
    with pytest.raises(ValueError, match="returns the parts it takes"):
        Layout.of(img="image", returns=("text",))


def run(dit, family, orders, wrap_step=None):
    img, txt, vec = inputs()
    with torch.no_grad(), planned_order(dit, family, orders, {}, None, wrap_step) as (options, control):
        return dit(img.clone(), txt.clone(), vec, control=control, transformer_options=options)


def test_a_text_first_model_runs_a_plan_as_the_flux_shaped_one():
    assert torch.equal(run(TextFirstDiT(), TEXT_FIRST, PLANNED), run(ToyDiT(), TOY, PLANNED))


def test_the_probe_reads_a_text_first_model_as_the_flux_shaped_one():
    results = []
    for dit, family in ((ToyDiT(), TOY), (TextFirstDiT(), TEXT_FIRST)):
        probe = Probe(family, max_tokens=0)
        with probe.evaluation(None):
            run(dit, family, PLANNED, probe.wrap_step)
        results.append({m.key: (m.labels, m.matrix) for m in probe.results()})
    flux_shaped, text_first = results
    assert list(text_first) == ["double_blocks/image", "double_blocks/text", "single_blocks"]
    for key, (labels, matrix) in flux_shaped.items():
        assert text_first[key][0] == labels
        assert np.array_equal(text_first[key][1], matrix), key
    assert not np.allclose(text_first["double_blocks/image"][1], text_first["double_blocks/text"][1])


class Executor:
    def __init__(self, dit):
        self.class_obj = type("BaseModel", (), {"diffusion_model": dit})()
        self.dit = dit

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options):
        img, txt, vec = inputs()
        return self.dit(img, txt, vec, control=control, transformer_options=transformer_options)


def test_the_fast_sweep_resumes_a_text_first_model_bit_for_bit():
    plan = LayerPlan("TextFirst", (("double_blocks", 5), ("single_blocks", 6)))
    runnable, _ = variants(plan, TEXT_FIRST.check_order, windows(plan.counts, "both", 1))
    base = plan.compose(plan.all_active)
    resumes = {v.window: resume(base, v.plan.compose(v.plan.all_active)) for v in runnable}
    dit = TextFirstDiT()
    fast, executor = FastSweep(TEXT_FIRST, base, resumes.values()), Executor(dit)
    options = lambda: {"cond_or_uncond": [0]}  # noqa: E731
    with torch.no_grad():
        with fast.recording():
            fast.around_call(executor, inputs()[0], torch.ones(1), transformer_options=options())
        for v in runnable:
            with fast.running(resumes[v.window]):
                got = fast.around_call(executor, inputs()[0], torch.ones(1), transformer_options=options())
            orders = v.plan.compose(v.plan.all_active)
            assert torch.equal(got, run(dit, TEXT_FIRST, orders)), v.window
            assert torch.equal(got, run(ToyDiT(), TOY, orders)), v.window
