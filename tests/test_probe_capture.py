"""The probe's capture on the toy DiT, through the pack's executor, against states recorded by hand."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dit_layer_lab.core.executor import planned_order
from dit_layer_lab.core.families import Layout
from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.core.probe import Probe, ProbeError, check_single_order
from dit_layer_lab.core.probe.capture import latent_frames
from dit_layer_lab.core.rewrite import LayerPlan, strategy_rewrite

from dit_layer_lab.tests.toy_dit import TOY, ToyDiT

FAMILY = dataclasses.replace(TOY, hidden_states={"double_blocks": Layout.of(img="image", txt="text"),
                                                 "single_blocks": Layout.of(x="text+image")})
IDENTITY = {"double_blocks": parse_steps("all", 5), "single_blocks": parse_steps("all", 6)}
PLANNED = {"double_blocks": parse_steps("0, [1-3], 4*2", 5), "single_blocks": parse_steps("5-3, 0*2", 6)}
COND_OR_UNCOND = [1, 0]  # a CFG batch: uncond rows 0-1, cond rows 2-3
COND = [2, 3]


def batch(seed, rows=4, img_tokens=6, txt_tokens=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(rows, img_tokens, dim, generator=g), torch.randn(rows, txt_tokens, dim, generator=g),
            torch.randn(rows, dim, generator=g))


def evaluate(probe, dit, orders, img, txt, vec, cond_or_uncond=COND_OR_UNCOND):
    """One model evaluation the way ComfyUI makes it: the probe's APPLY_MODEL wrapper around the executor."""

    def executor(x, t, c_concat, c_crossattn, control, transformer_options):
        with planned_order(dit, FAMILY, orders, transformer_options, None, probe.wrap_step) as (options, control):
            return dit(img.clone(), txt.clone(), vec, control=control, transformer_options=options)

    with torch.no_grad():
        return probe.around_call(executor, img, None, transformer_options={"cond_or_uncond": cond_or_uncond})


@torch.no_grad()
def recorded_by_hand(dit, orders, img, txt, vec):
    """Every hidden state of the planned run, written out without the executor or the probe."""
    img, txt = img.clone(), txt.clone()
    states = {"double_blocks/image": [img.clone()], "double_blocks/text": [txt.clone()]}
    for step in orders["double_blocks"]:
        outs = [dit.double_blocks[i](img=img.clone(), txt=txt.clone(), vec=vec) for i in step]
        img, txt = (sum(o[k] for o in outs) / len(step) for k in (0, 1))
        states["double_blocks/image"].append(img.clone())
        states["double_blocks/text"].append(txt.clone())
    x = torch.cat((txt, img), 1)
    states["single_blocks"] = [x.clone()]
    for step in orders["single_blocks"]:
        x = sum(dit.single_blocks[i](x.clone(), vec) for i in step) / len(step)
        states["single_blocks"].append(x.clone())
    return states


def subset(n_tokens, max_tokens, seed):
    if not 0 < max_tokens < n_tokens:
        return torch.arange(n_tokens)
    return torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed))[:max_tokens].sort().values


def cosine(rows):
    n = len(rows)
    return torch.tensor([[F.cosine_similarity(rows[i], rows[j], dim=1).mean().item() for j in range(n)]
                         for i in range(n)], dtype=torch.float64)


def expected_matrices(runs, aggregate, max_tokens, seed):
    """runs: one dict of states per evaluation. Cond rows, token subset, flattened per sample, then cosine."""
    out = {}
    for key in runs[0]:
        n_tokens = runs[0][key][0].shape[1]
        tokens = subset(n_tokens, max_tokens, seed)
        flat = [[s[COND][:, tokens].reshape(len(COND), -1).double() for s in run[key]] for run in runs]
        if aggregate == "per_step":
            out[key] = sum(cosine(rows) for rows in flat) / len(flat)
        else:
            out[key] = cosine([torch.stack(column).mean(0) for column in zip(*flat)])
    return out


@pytest.mark.parametrize("max_tokens", [0, 4])
@pytest.mark.parametrize("aggregate", ["per_step", "step_mean"])
@pytest.mark.parametrize("orders", [IDENTITY, PLANNED], ids=["identity", "planned"])
def test_matrices_equal_the_reference_from_states_recorded_by_hand(aggregate, max_tokens, orders):
    dit, seed = ToyDiT(), 11
    probe = Probe(FAMILY, aggregate, max_tokens, seed)
    inputs = [batch(s) for s in range(3)]
    for args in inputs:
        evaluate(probe, dit, orders, *args)
    expected = expected_matrices([recorded_by_hand(dit, orders, *args) for args in inputs], aggregate, max_tokens, seed)
    results = {m.key: m for m in probe.results()}
    assert list(results) == ["double_blocks/image", "double_blocks/text", "single_blocks"]
    assert probe.evaluations == 3
    for key, matrix in expected.items():
        assert results[key].matrix.shape == matrix.shape
        assert torch.allclose(torch.from_numpy(results[key].matrix), matrix, atol=1e-6), key
    assert results["single_blocks"].tokens == (9 if max_tokens == 0 else 4)
    assert results["single_blocks"].total_tokens == 9


def test_labels_follow_the_execution_order():
    probe = Probe(FAMILY)
    evaluate(probe, ToyDiT(), PLANNED, *batch(0))
    labels = {m.key: m.labels for m in probe.results()}
    assert labels["double_blocks/image"] == ["in", "0", "[1-3]", "4", "4#2"]
    assert labels["single_blocks"] == ["in", "5", "4", "3", "0", "0#2"]
    steps = {m.key: m.steps for m in probe.results()}
    assert steps["double_blocks/text"] == [None, (0,), (1, 2, 3), (4,), (4,)]


def test_unconditional_rows_do_not_count():
    dit = ToyDiT()
    first, second = Probe(FAMILY), Probe(FAMILY)
    img, txt, vec = batch(0)
    evaluate(first, dit, IDENTITY, img, txt, vec)
    other_img, other_txt, other_vec = (t.clone() for t in (img, txt, vec))
    for t in (other_img, other_txt, other_vec):
        t[:2] = torch.randn_like(t[:2]) * 3  # only the uncond rows change
    evaluate(second, dit, IDENTITY, other_img, other_txt, other_vec)
    for a, b in zip(first.results(), second.results()):
        assert torch.allclose(torch.from_numpy(a.matrix), torch.from_numpy(b.matrix), atol=1e-12)


def test_an_evaluation_without_cond_rows_is_not_captured():
    probe = Probe(FAMILY)
    evaluate(probe, ToyDiT(), IDENTITY, *batch(0), cond_or_uncond=[1])
    assert probe.evaluations == 0 and probe.nbytes == 0
    with pytest.raises(ProbeError, match="no model evaluation"):
        probe.results()


@pytest.mark.parametrize("aggregate", ["per_step", "step_mean"])
def test_held_memory_is_one_evaluation_whatever_the_number_of_steps(aggregate):
    peaks = []
    for steps in (2, 6):
        probe = Probe(FAMILY, aggregate, max_tokens=4)
        for s in range(steps):
            evaluate(probe, ToyDiT(), PLANNED, *batch(s))
        peaks.append(probe.peak_bytes)
    rows = {"image": 5, "text": 5, "single": 6}
    one_evaluation = 4 * len(COND) * 8 * (rows["image"] * 4 + rows["text"] * 3 + rows["single"] * 4)
    assert peaks == [one_evaluation, one_evaluation]


def test_an_interrupted_evaluation_is_dropped_and_the_model_restored():
    dit, probe = ToyDiT(), Probe(FAMILY)
    lists = (dit.double_blocks, dit.single_blocks)
    inputs = [batch(s) for s in range(3)]
    evaluate(probe, dit, IDENTITY, *inputs[0])

    original = dit.single_blocks[2].forward
    dit.single_blocks[2].forward = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("interrupted"))
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate(probe, dit, IDENTITY, *inputs[1])
    dit.single_blocks[2].forward = original
    assert (dit.double_blocks, dit.single_blocks) == lists
    assert not probe.capturing and probe.evaluations == 1

    evaluate(probe, dit, IDENTITY, *inputs[2])
    expected = expected_matrices([recorded_by_hand(dit, IDENTITY, *inputs[i]) for i in (0, 2)], "per_step", 0, 0)
    for m in probe.results():
        assert torch.allclose(torch.from_numpy(m.matrix), expected[m.key], atol=1e-6)


def test_an_order_that_changes_between_evaluations_is_refused():
    dit, probe = ToyDiT(), Probe(FAMILY)
    evaluate(probe, dit, IDENTITY, *batch(0))
    with pytest.raises(ProbeError, match="execution order changed"):
        evaluate(probe, dit, PLANNED, *batch(1))


def test_windowed_plans_that_change_the_order_are_refused_before_sampling():
    plan = LayerPlan("Toy", (("double_blocks", 5), ("single_blocks", 6)))
    counts = plan.counts
    check_single_order(plan.with_rewrite(strategy_rewrite(counts, "skip", "double_blocks", 1, 2)))
    windowed = plan.with_rewrite(strategy_rewrite(counts, "skip", "double_blocks", 1, 2, 0.0, 0.5))
    with pytest.raises(ProbeError, match="changes the block order during sampling"):
        check_single_order(windowed)


def test_bad_settings_name_the_valid_choices():
    with pytest.raises(ProbeError, match="choose one of per_step, step_mean"):
        Probe(FAMILY, "mean")
    with pytest.raises(ProbeError, match="max_tokens = -1"):
        Probe(FAMILY, max_tokens=-1)
    with pytest.raises(ProbeError, match="does not describe the hidden states of its single_blocks"):
        Probe(TOY).wrap_step("single_blocks", 0, (0,), ToyDiT().single_blocks[0])
    assert issubclass(ProbeError, ValueError) and not issubclass(ProbeError, PlanError)


def test_the_frames_of_a_video_latent_are_reported_and_its_tokens_spread_over_them():
    assert (latent_frames(torch.zeros(1, 16, 5, 4, 4)), latent_frames(torch.zeros(1, 16, 4, 4))) == (5, 1)
    probe = Probe(FAMILY, max_tokens=3)
    img, txt, vec = batch(0)
    video = torch.zeros(4, 16, 3, 2, 2)  # [B, C, T, H, W]: 3 frames; the toy's 6 image tokens stand for 3 x 2
    dit = ToyDiT()

    def executor(x, t, c_concat, c_crossattn, control, transformer_options):
        with planned_order(dit, FAMILY, IDENTITY, transformer_options, None, probe.wrap_step) as (options, _):
            return dit(img.clone(), txt.clone(), vec, transformer_options=options)

    with torch.no_grad():
        for _ in range(2):
            probe.around_call(executor, video, None, transformer_options={"cond_or_uncond": COND_OR_UNCOND})
    assert probe.frames == 3 and probe.evaluations == 2
    image = next(m for m in probe.results() if m.key == "double_blocks/image")
    assert (image.tokens, image.total_tokens) == (3, 6)
    kept = [tokens for key, tokens in probe._subsets.items() if key[:3] == ("double_blocks/image", 6, 3)]
    assert len(kept) == 1 and (kept[0] // 2).tolist() == [0, 1, 2]  # one token of each frame
