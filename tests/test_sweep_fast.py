"""Fast sweep on the toy DiT: every resumed skip equals the same skip run in full, bit for bit."""

import dataclasses

import pytest
import torch

from dit_layer_lab.core.executor import planned_order
from dit_layer_lab.core.families import Layout
from dit_layer_lab.core.experiments.fast_sweep import FastSweep, resume
from dit_layer_lab.core.experiments.sweep import SweepError, Window, variants, windows
from dit_layer_lab.core.plan import parse_steps
from dit_layer_lab.core.rewrite import LayerPlan, plan_rewrite

from dit_layer_lab.tests.toy_dit import TOY, ToyDiT, inputs, reference

FAMILY = dataclasses.replace(TOY, hidden_states={"double_blocks": Layout.of(img="image", txt="text"),
                                                 "single_blocks": Layout.of(x="text+image")})
COUNTS = (("double_blocks", 5), ("single_blocks", 6))


class Executor:
    """Stands in for ComfyUI's APPLY_MODEL executor: ``class_obj.diffusion_model`` and the call."""

    def __init__(self, dit, img, txt, vec):
        self.class_obj = type("BaseModel", (), {"diffusion_model": dit})()
        self.dit, self.img, self.txt, self.vec = dit, img, txt, vec
        self.blocks_run = 0

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options):
        return self.dit(self.img.clone(), self.txt.clone(), self.vec, control=control,
                        transformer_options=transformer_options)


def evaluate(wrapper, executor, control=None, options=None):
    options = {"cond_or_uncond": [0]} if options is None else options
    with torch.no_grad():
        return wrapper(executor, executor.img, torch.ones(1), None, None, control, options)


def plain(dit, orders, img, txt, vec, control=None):
    """The variant run in full through the executor, as the pack's plan wrapper runs it."""
    with torch.no_grad(), planned_order(dit, FAMILY, orders, {}, control) as (options, control):
        return dit(img.clone(), txt.clone(), vec, control=control, transformer_options=options)


def orders_of(plan):
    return plan.compose(plan.all_active)


def control_residuals(seed=3, txt_tokens=3, img_tokens=6, dim=8):
    g = torch.Generator().manual_seed(seed)
    return {"input": [torch.randn(2, img_tokens, dim, generator=g) for _ in range(5)],
            "output": [torch.randn(2, img_tokens, dim, generator=g) if i != 2 else None for i in range(6)]}


def sweep_all(plan, width, control=None, streams="both"):
    dit = ToyDiT()
    img, txt, vec = inputs()
    runnable, excluded = variants(plan, FAMILY.check_order, windows(plan.counts, streams, width))
    base = orders_of(plan)
    resumes = {v.window: resume(base, orders_of(v.plan)) for v in runnable}
    fast = FastSweep(FAMILY, base, resumes.values())
    executor = Executor(dit, img, txt, vec)
    with fast.recording():
        baseline = evaluate(fast.around_call, executor, control)
    results = {}
    for v in runnable:
        with fast.running(resumes[v.window]):
            results[v.window] = evaluate(fast.around_call, executor, control)
    return dit, (img, txt, vec), base, baseline, runnable, resumes, results, excluded


@pytest.mark.parametrize("with_control", [False, True], ids=["plain", "controlnet"])
@pytest.mark.parametrize("width", [1, 2, 6])
def test_every_resumed_skip_equals_the_skip_run_in_full(width, with_control):
    control = control_residuals() if with_control else None
    plan = LayerPlan("Toy", COUNTS)
    streams = "both" if width < 6 else "single_blocks"
    dit, args, base, baseline, runnable, resumes, results, excluded = sweep_all(plan, width, control, streams)
    assert not excluded
    assert torch.equal(baseline, plain(dit, base, *args, control))
    assert torch.equal(baseline, reference(dit, base, *args, control))
    for v in runnable:
        full = plain(dit, orders_of(v.plan), *args, control)
        assert torch.equal(results[v.window], full), v.window
        assert torch.allclose(results[v.window], reference(dit, orders_of(v.plan), *args, control), atol=1e-6)
        assert not torch.equal(results[v.window], baseline), v.window


@pytest.mark.parametrize("width, refused", [
    (1, [("double_blocks", "1"), ("double_blocks", "2")]),
    (2, [("double_blocks", "0-1"), ("double_blocks", "1-2"), ("double_blocks", "2-3"), ("single_blocks", "2-3"),
         ("single_blocks", "3-4"),
         ("single_blocks", "4-5")]),
])
def test_resuming_follows_a_plan_the_model_already_carries(width, refused):
    plan = LayerPlan("Toy", COUNTS)
    plan = plan.with_rewrite(plan_rewrite(plan.counts, "double_blocks", "0, [1-2], 3-4"))
    plan = plan.with_rewrite(plan_rewrite(plan.counts, "single_blocks", "0-2, 5-3"))
    dit, args, base, baseline, runnable, resumes, results, excluded = sweep_all(plan, width)
    # blocks 1 and 2 run as a parallel group and single blocks 3-5 reversed: runs that are no longer in place
    assert sorted((e.window.stream, e.window.label) for e in excluded) == refused
    assert all("no longer run" in e.reason for e in excluded)
    assert torch.equal(baseline, plain(dit, base, *args))
    for v in runnable:
        assert torch.equal(results[v.window], plain(dit, orders_of(v.plan), *args)), v.window


def test_a_skip_runs_only_the_blocks_after_its_window():
    base = {"double_blocks": parse_steps("all", 5), "single_blocks": parse_steps("all", 6)}

    def variant(double="all", single="all"):
        return resume(base, {"double_blocks": parse_steps(double, 5), "single_blocks": parse_steps(single, 6)})

    middle_double = variant(double="0-1, 3-4")
    assert middle_double.orders == {"double_blocks": ((3,), (4,)), "single_blocks": base["single_blocks"]}
    assert (middle_double.stream, middle_double.source) == ("double_blocks", 2)
    middle_single = variant(single="0-2, 4-5")
    assert middle_single.orders == {"double_blocks": (), "single_blocks": ((4,), (5,))}
    assert (middle_single.stream, middle_single.source) == ("single_blocks", 3)
    first_single = variant(single="1-5")  # no double block runs: the single stream's input is recorded
    assert first_single.orders == {"double_blocks": (), "single_blocks": parse_steps("1-5", 6)}
    assert (first_single.stream, first_single.source) == ("single_blocks", 0)
    # a window at the end of a stream: the state after it is built outside any block, so the last
    # block before the window runs again from its recorded input
    last_single = variant(single="0-4")
    assert last_single.orders == {"double_blocks": (), "single_blocks": ((4,),)}
    assert (last_single.stream, last_single.source) == ("single_blocks", 4)
    last_double = variant(double="0-3")
    assert last_double.orders == {"double_blocks": ((3,),), "single_blocks": base["single_blocks"]}
    whole_single = variant(single="none")
    assert whole_single.orders == {"double_blocks": ((4,),), "single_blocks": ()}
    first_double = variant(double="1-4")  # nothing before the window: the variant runs in full
    assert first_double.stream is None and first_double.orders["double_blocks"] == parse_steps("1-4", 5)
    assert first_double.blocks_run == 10 and middle_single.blocks_run == 2


def test_a_variant_whose_calls_differ_from_the_baseline_is_refused():
    plan = LayerPlan("Toy", COUNTS)
    runnable, _ = variants(plan, FAMILY.check_order, [Window("single_blocks", 2, 2)])
    base = orders_of(plan)
    r = resume(base, orders_of(runnable[0].plan))
    fast = FastSweep(FAMILY, base, [r])
    executor = Executor(ToyDiT(), *inputs())
    with fast.recording():
        evaluate(fast.around_call, executor)
    with pytest.raises(SweepError, match="batched the evaluation differently"):
        with fast.running(r):
            evaluate(fast.around_call, executor, options={"cond_or_uncond": [1, 0]})
    with pytest.raises(SweepError, match="called outside the sweep"):
        evaluate(fast.around_call, executor)


def test_block_replace_patches_are_refused():
    plan = LayerPlan("Toy", COUNTS)
    base = orders_of(plan)
    fast = FastSweep(FAMILY, base, [])
    options = {"cond_or_uncond": [0], "patches_replace": {"dit": {("single_block", 1): lambda a, o: o["original_block"](a)}}}
    with pytest.raises(SweepError, match="block-replace patches"):
        with fast.recording():
            evaluate(fast.around_call, Executor(ToyDiT(), *inputs()), options=options)


def test_recorded_states_are_copies_and_held_only_where_needed():
    plan = LayerPlan("Toy", COUNTS)
    runnable, _ = variants(plan, FAMILY.check_order, windows(plan.counts, "single_blocks", 1))
    base = orders_of(plan)
    fast = FastSweep(FAMILY, base, [resume(base, orders_of(v.plan)) for v in runnable])
    img, txt, vec = inputs()
    with fast.recording():
        evaluate(fast.around_call, Executor(ToyDiT(), img, txt, vec))
    # single-stream windows 0..5 resume at single positions 0..4 (the last one re-runs block 4)
    (recorded,) = fast.states.values()  # one model call
    assert sorted(recorded) == [("single_blocks", i) for i in range(5)]
    assert fast.nbytes == 5 * 2 * 9 * 8 * 4
    fast.release()
    assert fast.nbytes == 0


def test_recording_every_start_resumes_any_combined_skip_bit_for_bit():
    """What a search needs: plans not known when the baseline is recorded, each resumed where it first differs."""
    import random

    from dit_layer_lab.core.experiments.fast_sweep import every_start
    from dit_layer_lab.core.experiments.skip_search import combined_plan

    plan = LayerPlan("Toy", COUNTS)
    dit, args = ToyDiT(), inputs()
    base = orders_of(plan)
    starts = every_start(base)
    assert {(r.stream, r.source) for r in starts} == {(s, i) for s, n in COUNTS for i in range(n)}
    fast = FastSweep(FAMILY, base, starts)
    executor = Executor(dit, *args)
    control = control_residuals()
    with fast.recording():
        baseline = evaluate(fast.around_call, executor, control)
    for r in starts:  # the baseline resumed at any step is the baseline
        with fast.running(r):
            assert torch.equal(evaluate(fast.around_call, executor, control), baseline), (r.stream, r.source)
    units = [Window(s, i, i) for s, n in COUNTS for i in range(n)]
    rng = random.Random(0)
    sets = [rng.sample(units, rng.randint(1, 5)) for _ in range(40)]
    sets += [[Window("double_blocks", i, i) for i in (2, 3, 4)] + [Window("single_blocks", 0, 0)],  # ends a stream
             [Window("single_blocks", i, i) for i in (4, 5)], [Window("double_blocks", 0, 0), units[-1]]]
    for chosen in sets:
        orders = orders_of(combined_plan(plan, chosen, FAMILY.check_order))
        with fast.running(resume(base, orders)):
            result = evaluate(fast.around_call, executor, control)
        assert torch.equal(result, plain(dit, orders, *args, control)), chosen


class KeepingExecutor(Executor):
    """Keeps a view of the tensors it hands the loop, and can hand it the call's own ``x`` as the image stream."""

    def __init__(self, dit, img, txt, vec, call_x_as_img=False):
        super().__init__(dit, img, txt, vec)
        self.call_x_as_img = call_x_as_img

    def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options):
        self.given = x if self.call_x_as_img else self.img.clone()
        self.given_ptr, self.view = self.given.data_ptr(), self.given.view(-1)
        self.values = self.given.clone()
        return self.dit(self.given, self.txt.clone(), self.vec, control=control,
                        transformer_options=transformer_options)


def test_a_resumed_block_gets_its_state_in_the_loop_s_own_tensor_never_in_one_the_call_was_given():
    plan = LayerPlan("Toy", COUNTS)
    base = orders_of(plan)
    skip = resume(base, orders_of(plan.with_rewrite(plan_rewrite(plan.counts, "double_blocks", "0-1, 3-4"))))
    assert (skip.stream, skip.source) == ("double_blocks", 2)  # the loop's image tensor is handed block 2's input
    args = inputs()
    full = plain(ToyDiT(), orders_of(plan.with_rewrite(plan_rewrite(plan.counts, "double_blocks", "0-1, 3-4"))),
                 *args)
    for call_x_as_img in (False, True):
        fast = FastSweep(FAMILY, base, [skip])
        executor = KeepingExecutor(ToyDiT(), *args, call_x_as_img=call_x_as_img)
        x = executor.img.clone()
        with torch.no_grad():
            with fast.recording():
                fast.around_call(executor, x.clone(), torch.ones(1), None, None, None, {"cond_or_uncond": [0]})
            (record,) = [call[("double_blocks", 2)] for call in fast.states.values()]
            before = {part: v.clone() for part, v in record.items()}
            with fast.running(skip):
                got = fast.around_call(executor, x, torch.ones(1), None, None, None, {"cond_or_uncond": [0]})
        assert torch.equal(got, full), call_x_as_img
        # the record itself is never what a block updates in place
        assert all(torch.equal(record[part], v) for part, v in before.items())
        # re-pointed, not written into: a view of what the loop's tensor held keeps its values
        assert torch.equal(executor.view, executor.values.view(-1))
        if call_x_as_img:  # the caller's x keeps its storage (the toy's block then updates a copy)
            assert executor.given is x and x.data_ptr() == executor.given_ptr
            assert torch.equal(x, executor.values)
        else:
            assert executor.given.data_ptr() != executor.given_ptr
            assert not torch.equal(executor.given, executor.values)


def test_without_in_place_a_resumed_block_gets_a_new_copy_with_the_same_result():
    plan = LayerPlan("Toy", COUNTS)
    base = orders_of(plan)
    orders = orders_of(plan.with_rewrite(plan_rewrite(plan.counts, "single_blocks", "0-2, 4-5")))
    skip = resume(base, orders)
    args = inputs()
    results = []
    for in_place in (True, False):
        fast = FastSweep(FAMILY, base, [skip])
        fast.in_place = in_place
        executor = KeepingExecutor(ToyDiT(), *args)
        with fast.recording():
            evaluate(fast.around_call, executor)
        with fast.running(skip):
            results.append(evaluate(fast.around_call, executor))
    assert torch.equal(results[0], results[1])
    assert torch.equal(results[0], plain(ToyDiT(), orders, *args))
