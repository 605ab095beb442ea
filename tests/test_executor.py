import pytest
import torch

from dit_layer_lab.core.executor import ParallelBlocks, planned_order
from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.core.rewrite import parallel_steps, repeat_steps, reverse_steps, shuffle_steps

from dit_layer_lab.tests.toy_dit import TOY, ToyDiT, inputs, reference

PLANS = {
    "skip": {"double_blocks": parse_steps("0, 3-4", 5), "single_blocks": parse_steps("0-1, 5", 6)},
    "repeat": {"double_blocks": ((0,),) + repeat_steps(1, 3) + ((4,),)},
    "reverse": {"single_blocks": ((0,),) + reverse_steps(1, 4) + ((5,),)},
    "parallel": {"double_blocks": ((0,),) + parallel_steps(1, 3) + ((4,),),
                 "single_blocks": parallel_steps(0, 5)},
    "looped parallel": {"single_blocks": ((0,),) + parallel_steps(1, 4, loops=3) + ((5,),)},
    "shuffle": {"double_blocks": shuffle_steps(0, 4, seed=3), "single_blocks": shuffle_steps(1, 5, seed=7)},
    "none": {"double_blocks": (), "single_blocks": ()},
    "mixed": {"double_blocks": parse_steps("4, [0-2]*2, 3*2", 5), "single_blocks": parse_steps("(5-3)*2, [0, 2]", 6)},
}


@torch.no_grad()
def run(dit, orders, *args, control=None, options=None):
    args = [a.clone() for a in args]  # the toy, like Flux, updates its inputs in place
    with planned_order(dit, TOY, orders, options or {}, control) as (options, control):
        return dit(*args, control=control, transformer_options=options)


@pytest.mark.parametrize("name", PLANS)
def test_plan_matches_reference(name):
    dit, args = ToyDiT(), inputs()
    expected = reference(dit, PLANS[name], *args)
    assert torch.allclose(run(dit, PLANS[name], *args), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["skip", "repeat", "reverse", "shuffle", "none"])
def test_sequential_plans_are_exact(name):
    dit, args = ToyDiT(), inputs()
    assert torch.equal(run(dit, PLANS[name], *args), reference(dit, PLANS[name], *args))


def test_original_order_through_the_executor_is_bit_identical():
    dit, args = ToyDiT(), inputs()
    with torch.no_grad():
        plain = dit(*[a.clone() for a in args])
    identity = {"double_blocks": tuple((i,) for i in range(5)), "single_blocks": tuple((i,) for i in range(6))}
    assert torch.equal(run(dit, identity, *args), plain)


def test_lists_and_weights_are_restored_also_after_an_error():
    dit, args = ToyDiT(), inputs()
    lists = (dit.double_blocks, dit.single_blocks)
    state = {k: v.clone() for k, v in dit.state_dict().items()}

    def explode(args, extra):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        run(dit, PLANS["mixed"], *args, options={"patches_replace": {"dit": {("single_block", 3): explode}}})
    assert (dit.double_blocks, dit.single_blocks) == lists
    assert dit.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in dit.state_dict().items())


def test_inputs_are_not_aliased_between_parallel_members():
    block = ToyDiT().double_blocks[0]
    img, txt, vec = inputs()
    expected = block(img.clone(), txt.clone(), vec)
    out = ParallelBlocks([block, block])(img.clone(), txt.clone(), vec)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out, expected))


def test_states_passed_as_one_tuple_are_not_aliased_between_parallel_members():
    """LTX-2's blocks take (video, audio) as one tuple and update both in place."""

    def block(x, scale):
        video, audio = x
        video.mul_(scale)
        audio.add_(scale)
        return video, audio

    video, audio = torch.ones(2, 3), torch.zeros(2, 4)
    out = ParallelBlocks([lambda x: block(x, 2.0), lambda x: block(x, 4.0)])((video, audio))
    assert torch.equal(out[0], torch.full((2, 3), 3.0)) and torch.equal(out[1], torch.full((2, 4), 3.0))


def test_control_residuals_follow_their_block():
    dit, args = ToyDiT(), inputs()
    g = torch.Generator().manual_seed(5)
    control = {"input": [torch.randn(2, 6, 8, generator=g) for _ in range(5)],
               "output": [torch.randn(2, 6, 8, generator=g), None, torch.randn(2, 6, 8, generator=g)]}
    for name in ("reverse", "parallel", "mixed", "skip"):
        expected = reference(dit, PLANS[name], *args, control=control)
        assert torch.allclose(run(dit, PLANS[name], *args, control=control), expected, atol=1e-6), name


def test_replace_patches_follow_their_block():
    dit, args = ToyDiT(), inputs()
    seen = []

    def patch(args, extra):
        seen.append(args["img"].shape)
        out = extra["original_block"](args)
        return {"img": out["img"] * 0.5}

    options = {"patches_replace": {"dit": {("single_block", 1): patch}}}
    orders = {"single_blocks": parse_steps("5-0", 6)}
    out = run(dit, orders, *args, options=options)
    assert len(seen) == 1

    class Halved(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x, vec):
            return self.block(x, vec) * 0.5

    halved = ToyDiT()
    halved.single_blocks[1] = Halved(halved.single_blocks[1])
    assert torch.equal(out, reference(halved, orders, *args))


def test_replace_patch_on_a_parallel_member_is_refused():
    dit, args = ToyDiT(), inputs()
    options = {"patches_replace": {"dit": {("double_block", 2): lambda a, e: e["original_block"](a)}}}
    with pytest.raises(PlanError, match="double_blocks block 2 carries a block-replace patch"):
        run(dit, PLANS["parallel"], *args, options=options)


def test_state_dict_names_are_intact_during_the_call():
    dit, args = ToyDiT(), inputs()
    names = list(dit.state_dict())
    with planned_order(dit, TOY, PLANS["mixed"], {}) as _:
        assert isinstance(dit.double_blocks[1], ParallelBlocks)
    assert list(dit.state_dict()) == names


def _told(dit, orders, options=None):
    """(stream, block index) of every block run, as each block was told it by transformer_options."""
    told = []
    run(dit, orders, *inputs(), options={**(options or {}), "told": told})
    names = {id(b): ("double_blocks", i) for i, b in enumerate(dit.double_blocks)}
    names.update({id(b): ("single_blocks", i) for i, b in enumerate(dit.single_blocks)})
    return [(names[id(block)], index) for block, index in told]


@pytest.mark.parametrize("name", PLANS)
def test_every_block_is_told_its_own_index(name):
    dit = ToyDiT()
    told = _told(dit, PLANS[name])
    assert told or name == "none"
    assert all(index == own for (stream, own), index in told), told
    ran = [own for (stream, own), _ in told if stream == "double_blocks"]
    expected = PLANS[name].get("double_blocks", tuple((i,) for i in range(5)))
    assert ran == [i for step in expected for i in step]


def test_a_block_run_through_a_moved_replace_patch_is_told_its_own_index():
    dit = ToyDiT()
    options = {"patches_replace": {"dit": {("single_block", 1): lambda a, e: e["original_block"](a)}}}
    told = _told(dit, {"single_blocks": parse_steps("5-0", 6)}, options)
    assert [t for t in told if t[0][0] == "single_blocks"] == [(("single_blocks", i), i) for i in range(5, -1, -1)]


def _offset_patch(offsets, seen):
    def patch(args):
        seen.append((args["block_index"], args["transformer_options"]["block_index"]))
        return {"img": args["img"] + offsets[args["block_index"]]}
    return patch


@pytest.mark.parametrize("name", ["skip", "repeat", "mixed", "none"])
def test_block_index_patches_follow_their_block(name):
    orders = dict(PLANS[name])
    orders["double_blocks"] = tuple(s for s in orders.get("double_blocks", ()) if len(s) == 1) or ((3,), (1,))
    dit, args = ToyDiT(), inputs()
    offsets = [torch.full((8,), float(i + 1)) / 10 for i in range(5)]
    seen = []
    out = run(dit, orders, *args, options={"patches": {"double_block": [_offset_patch(offsets, seen)]}})
    # the reference adds block i's offset after every run of block i, as a residual that follows its block
    control = {"input": offsets, "output": []}
    assert torch.allclose(out, reference(dit, orders, *args, control=control), atol=1e-6)
    ran = [step[0] for step in orders["double_blocks"]]
    assert seen == [(i, i) for i in ran]


def test_block_index_patch_with_a_parallel_group_is_refused():
    dit, args = ToyDiT(), inputs()
    options = {"patches": {"double_block": [lambda a: {"img": a["img"]}]}}
    with pytest.raises(PlanError, match=r"patches\['double_block'\].*blocks \[1-3\] as a parallel group"):
        run(dit, PLANS["parallel"], *args, options=options)
    run(dit, {"single_blocks": PLANS["parallel"]["single_blocks"]}, *args, options=options)  # other stream: fine


def test_names_reach_the_original_blocks_during_a_planned_call():
    """Anything that walks the model by name mid-call (weight patching, unloading) finds each block under its own name."""
    dit, args = ToyDiT(), inputs()
    names = [name for name, _ in dit.named_modules()]
    modules = dict(dit.named_modules())
    seen = []

    def look(a, extra):
        seen.append(([name for name, _ in dit.named_modules()], dit.get_submodule("double_blocks.3"),
                     dit.get_parameter("double_blocks.4.img"), list(dit.state_dict())))
        return extra["original_block"](a)

    options = {"patches_replace": {"dit": {("double_block", 0): look}}}
    run(dit, {"double_blocks": parse_steps("4-0", 5), "single_blocks": parse_steps("[0-2], 5*2", 6)}, *args,
        options=options)
    assert len(seen) == 1
    during_names, block3, weight4, keys = seen[0]
    assert during_names == names
    assert block3 is modules["double_blocks.3"]
    assert weight4 is modules["double_blocks.4"].img
    assert keys == list(dit.state_dict())
