"""What a model keeps by block position, under a plan: block-index patches, FluxKVCache, windows,
weights loaded or unloaded in the middle of a call, and per-device clones called from threads.

References are written here: twins of the model whose block lists are rebuilt in the planned order
(``test_reorder.reference_model``), each block seeing its own ``block_index``.
"""

import inspect
import itertools
import json
import threading
import time

import pytest
import torch

import comfy.ldm.flux.layers
import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.samplers
import node_helpers
from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe
from dit_layer_lab.nodes.reorder import LayerLabPlan, LayerLabReverse, LayerLabSkip
from dit_layer_lab.nodes.sweep import LayerLabImportanceSweep
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_reorder import FAMILIES, reference_model, twin

ATTENTION_PATCHES = "attn1_output_patch" in inspect.getsource(comfy.ldm.flux.layers)
needs_attention_patches = pytest.mark.skipif(
    not ATTENTION_PATCHES, reason="this ComfyUI's Flux blocks take no attention patches (ComfyUI 0.33 added them)")

# (double_blocks plan, single_blocks plan) over 3 double and 4 single blocks
PLANS = {
    "reverse": ("2-0", "3-0"),
    "repeat": ("0, 1*3, 2", "0-1, 2*2, 3"),
    "skip": ("0, 2", "1, 3"),
    "parallel": ("[0-2]", "0, [1-3]"),
    "looped parallel": ("0, [1-2]*3", "[0-3]*2"),
}
SEQUENTIAL = ("reverse", "repeat", "skip")


def sample(model, inputs, **kwargs):
    positive, negative, latent = inputs
    return tm.sample(model, positive, negative, latent, **kwargs)


def planned(model, name):
    double_blocks, single_blocks = PLANS[name]
    return LayerLabPlan.execute(model, double_blocks, single_blocks, 0.0, 1.0).args[0]


def orders_of(name, counts=(3, 4)):
    double_blocks, single_blocks = PLANS[name]
    return {"double_blocks": parse_steps(double_blocks, counts[0]), "single_blocks": parse_steps(single_blocks, counts[1])}


def assert_matches(got, expected, name):
    if name in SEQUENTIAL:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ block-index patches, FluxKVCache


def scale_by_block_index(attention, extra_options):
    """A block-index patch: each block's attention output scaled by a factor of its own."""
    factor = {"double": 1.0, "single": 0.5}[extra_options["block_type"]] + 0.3 * extra_options["block_index"]
    return attention * factor


@needs_attention_patches
@pytest.mark.parametrize("family", ["flux", "flux2", "chroma"])
@pytest.mark.parametrize("name", list(PLANS))
def test_a_block_index_patch_follows_its_block(family, name):
    if family == "chroma" and name not in SEQUENTIAL:
        pytest.skip("the Chroma reference covers sequential orders (parallel: test_reorder)")
    model = FAMILIES[family][0]()
    inputs = (*tm.conditioning(model), tm.latent(model, 8, 8))
    patched = model.clone()
    patched.set_model_attn1_output_patch(scale_by_block_index)
    got = sample(planned(patched, name), inputs)

    reference = twin(family)
    reference.set_model_attn1_output_patch(scale_by_block_index)
    expected = sample(reference_model(family, orders_of(name), reference), inputs)
    assert_matches(got, expected, name)
    assert not torch.equal(got, sample(planned(model, name), inputs)), "the patch changed nothing: a weak test"


def kv_cache_inputs(model):
    import comfy_extras.nodes_flux

    positive, negative = tm.conditioning(model)
    reference_latent = torch.randn(1, 128, 4, 4, generator=torch.Generator().manual_seed(7))
    positive = node_helpers.conditioning_set_values(positive, {"reference_latents": [reference_latent]}, append=True)
    negative = node_helpers.conditioning_set_values(negative, {"reference_latents": [reference_latent]}, append=True)
    return (positive, negative, tm.latent(model, 8, 8)), comfy_extras.nodes_flux.FluxKVCache


@pytest.mark.parametrize("name", list(PLANS))
def test_flux_kv_cache_keys_reference_keys_and_values_by_the_block_that_runs(name):
    import comfy_extras.nodes_flux

    if not hasattr(comfy_extras.nodes_flux, "FluxKVCache"):
        pytest.skip("this ComfyUI has no FluxKVCache node (ComfyUI 0.33 added it)")
    model = tm.tiny_flux2_klein(double=3, single=4)
    inputs, kv_cache = kv_cache_inputs(model)
    # a new cache for every sampling run, as a new run of the node would have
    if name in ("repeat", "looped parallel"):
        with pytest.raises(PlanError, match=r"Flux KV Cache keeps one set .* block 1 runs 3 times per model call"):
            sample(planned(kv_cache.execute(model).args[0], name), inputs, steps=3)
        return
    got = sample(planned(kv_cache.execute(model).args[0], name), inputs, steps=3)
    reference = kv_cache.execute(twin("flux2_klein")).args[0]
    expected = sample(reference_model("flux2_klein", orders_of(name), reference), inputs, steps=3)
    assert_matches(got, expected, name)
    without_cache = sample(planned(model, name), inputs, steps=3)
    assert not torch.equal(got, without_cache), "the cache changed nothing: a weak test"


# ------------------------------------------------------------------ windows


def test_a_zero_length_window_is_the_unpatched_model_bit_for_bit():
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model, 8, 8))
    plain = sample(model, inputs, steps=4)
    for at in (0.0, 0.3, 0.5, 1.0):
        never, summary = LayerLabSkip.execute(model, stream="single_blocks", first=0, last=3,
                                              start_percent=at, end_percent=at).args
        assert torch.equal(sample(never, inputs, steps=4), plain), at
        assert "never applies" in summary


def by_sigma(model, start_percent, end_percent, inside, outside):
    """A reference that switches twins by ComfyUI's window rule: sigma(end) < sigma <= sigma(start)."""
    to_sigma = model.get_model_object("model_sampling").percent_to_sigma
    high, low = to_sigma(start_percent), to_sigma(end_percent)

    def apply_model(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = float(t.reshape(-1)[0])
        chosen = inside if high >= sigma > low else outside
        options = {k: v for k, v in transformer_options.items() if k != "wrappers"}  # not this wrapper again
        return chosen.model.apply_model(x, t, c_concat, c_crossattn, control, options, **kwargs)

    switching = model.clone()
    switching.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_by_sigma", apply_model)
    return switching


def test_windows_that_meet_at_one_percent_compose_without_a_conflict():
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model, 8, 8))
    first, _ = LayerLabReverse.execute(model, stream="double_blocks", first=0, last=2,
                                       start_percent=0.0, end_percent=0.5).args
    both, summary = LayerLabSkip.execute(first, stream="double_blocks", first=0, last=2,
                                         start_percent=0.5, end_percent=1.0).args
    assert "sampling 0%-50%: double_blocks = 2-0" in summary
    assert "sampling 50%-100%: double_blocks = none" in summary

    reversed_twin = reference_model("flux", {"double_blocks": parse_steps("2-0", 3)})
    skipping_twin = reference_model("flux", {"double_blocks": ()})
    reference = by_sigma(model, 0.0, 0.5, reversed_twin, skipping_twin)
    for steps in (2, 4, 5):  # 2 and 4 steps put a sigma on 50% exactly (simple schedule)
        got = sample(both, inputs, steps=steps)
        assert torch.equal(got, sample(reference, inputs, steps=steps)), steps
    assert not torch.equal(got, sample(reversed_twin, inputs, steps=5))
    assert not torch.equal(got, sample(skipping_twin, inputs, steps=5))


# ------------------------------------------------------------------ weights loaded or unloaded mid-call


def test_unloading_and_reloading_weights_in_the_middle_of_a_planned_call_keeps_every_weight_in_place():
    """What dynamic VRAM, or a core patch that loads a model mid-call, can do: walk the model by name
    while a planned list is in place. Each name must still reach its own block."""
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model, 8, 8))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    delta = torch.randn(before[key].shape, generator=torch.Generator().manual_seed(3)) * 0.2
    lora = model.clone()
    lora.add_patches({key: (delta,)}, 1.0)
    patched = planned(lora, "reverse")
    names = [name for name, _ in model.model.named_modules()]
    seen = []

    def unload_and_reload(args, extra):
        if not seen:
            seen.append([name for name, _ in model.model.named_modules()])
            comfy.model_management.unload_all_models()  # every weight restored from its backup, by name
            comfy.model_management.load_models_gpu([patched])  # and the LoRA applied again, by name
        return extra["original_block"](args)

    patched.set_model_patch_replace(unload_and_reload, "dit", "single_block", 0)
    got = sample(patched, inputs, steps=2)

    assert seen and seen[0] == names
    reference = reference_model("flux", orders_of("reverse"))
    with torch.inference_mode():
        reference.model.diffusion_model.double_blocks[2].block.img_attn.qkv.weight += delta  # position 2 runs block 0
    torch.testing.assert_close(got, sample(reference, inputs, steps=2), rtol=1e-5, atol=1e-5)
    comfy.model_management.unload_all_models()
    after = model.model.state_dict()
    assert [k for k in before if not torch.equal(after[k], before[k])] == []


# ------------------------------------------------------------------ per-device clones called from threads


def per_device_threads(other_device_model, meet=None, serial=False):
    """ComfyUI 0.33's multi-GPU work units, emulated on the CPU: cond and uncond of each evaluation at
    once, from two threads, each on its own copy of the model, with one ``model_options``. Which thread
    starts first alternates; ``meet`` (a barrier) can hold both inside the model together. ``serial``
    runs the threads one after the other: the same calls, with no overlap."""
    turn = itertools.count()

    def calc_cond_batch(args):
        conds, x, sigma, options = args["conds"], args["input"], args["sigma"], args["model_options"]
        late = next(turn) % 2
        out, errors = [None, None], []

        def work(k, base):
            try:
                if k == late:
                    time.sleep(0.02)
                only_k = [cond if j == k else None for j, cond in enumerate(conds)]
                with torch.inference_mode():  # as the server runs prompts, and 0.33's GPU workers their units
                    out[k] = comfy.samplers.calc_cond_batch(base, only_k, x, sigma, options)[k]
            except BaseException as error:  # noqa: BLE001 - re-raised below, in the sampling thread
                errors.append(error)
                if meet is not None:
                    meet.abort()

        threads = [threading.Thread(target=work, args=(k, base))
                   for k, base in enumerate((args["model"], other_device_model.model))]
        for thread in threads:
            thread.start()
            if serial:
                thread.join()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return out

    return calc_cond_batch


def on_devices(model, other_device_model, meet=None, serial=False):
    other_device_model.model.current_patcher = other_device_model  # as sampling sets it for the loaded model
    clone = model.clone()
    clone.model_options["sampler_calc_cond_batch_function"] = per_device_threads(other_device_model, meet, serial)
    return clone


def meet_in_first_block(models, meet):
    def wait(module, args):
        meet.wait(timeout=20)

    for m in models:
        m.model.diffusion_model.double_blocks[0].register_forward_pre_hook(wait)


def test_the_probe_captures_each_thread_for_itself():
    model, other = tm.tiny_flux(double=3, single=4), tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    latent = {"samples": tm.latent(model, 8, 8)}

    def probe(m):
        with torch.inference_mode():
            image, sampled, report = LayerLabSimilarityProbe.execute(
                planned(m, "reverse"), positive, negative, latent, 0, 3, 2.0, "euler", "simple", 1.0,
                "per_step", 0).args
        return sampled["samples"], report

    expected = probe(on_devices(model, other, serial=True))
    meet = threading.Barrier(2)
    meet_in_first_block((model, other), meet)  # the uncond thread runs blocks while cond is being captured
    got = probe(on_devices(model, other, meet))
    assert torch.equal(got[0], expected[0])
    assert got[1] == expected[1]


def test_the_fast_sweep_matches_calls_by_what_they_are_not_when_they_arrive():
    model, other = tm.tiny_flux(double=3, single=4), tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model, seed=1)
    latent = {"samples": tm.latent(model, 8, 8)}

    def fast_sweep(m):
        with torch.inference_mode():
            report = json.loads(LayerLabImportanceSweep.execute(
                m, positive, negative, latent, 0, 3, 2.0, "euler", "simple", 1.0, "both", 1, "fast", 0.5,
                "latent_cosine", 2, 0.0, None).args[1])
        report["settings"].pop("available_bytes")  # the machine's free memory when the sweep began
        return report

    assert fast_sweep(on_devices(model, other)) == fast_sweep(on_devices(model, other, serial=True))
