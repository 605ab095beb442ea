"""Modified steps on plain torch: a strength, sub-layer parts, one stream, against references written here."""

import dataclasses

import pytest
import torch
from torch import nn

from dit_layer_lab.core.executor import PlannedBlocks, planned_order
from dit_layer_lab.core.families import Family, Layout, SubLayers
from dit_layer_lab.core.modified import ScaledSublayer, ScaledUpdate
from dit_layer_lab.core.plan import PlanError, parse_steps

from dit_layer_lab.tests.toy_dit import TEXT_FIRST, TextFirstDiT, inputs

DIM = 8


class Double(nn.Module):
    """attention then MLP on each stream, updated in place as Flux does."""

    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.img_attn_out, self.txt_attn_out = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.img_mlp, self.txt_mlp = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)

    def parts(self, img, txt, vec):
        joint = torch.tanh(img.mean(1, keepdim=True) + txt.mean(1, keepdim=True) + vec[:, None])
        return self.img_attn_out(img * joint), self.txt_attn_out(txt - joint)

    def forward(self, img, txt, vec):
        img_attn, txt_attn = self.parts(img, txt, vec)
        img += img_attn
        txt += txt_attn
        img += self.img_mlp(torch.tanh(img))
        txt += self.txt_mlp(torch.tanh(txt))
        return img, txt


class Single(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.w = nn.Linear(DIM, DIM)

    def forward(self, x, vec):
        x += torch.tanh(self.w(x) + vec[:, None])
        return x


class PartsDiT(nn.Module):
    def __init__(self, double=4, single=3):
        super().__init__()
        self.double_blocks = nn.ModuleList(Double(10 + i) for i in range(double))
        self.single_blocks = nn.ModuleList(Single(20 + i) for i in range(single))

    def forward(self, img, txt, vec):
        for block in self.double_blocks:
            img, txt = block(img, txt, vec)
        x = torch.cat((txt, img), 1)
        for block in self.single_blocks:
            x = block(x, vec)
        return x[:, txt.shape[1]:]


PARTS = Family(
    name="Parts",
    classes=("test.PartsDiT",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    hidden_states={"double_blocks": Layout.of(img="image", txt="text"), "single_blocks": Layout.of(x="text+image")},
    sublayers={"double_blocks": SubLayers(attn=("img_attn_out", "txt_attn_out"), mlp=("img_mlp", "txt_mlp")),
               "single_blocks": "its one projection mixes both"},
)


def reference_double(block, img, txt, vec, *, attn=1.0, mlp=1.0, keep_img=1.0, keep_txt=1.0):
    """One double block computed from its parts, with each part's contribution scaled, then each update."""
    img0, txt0 = img, txt
    img_attn, txt_attn = block.parts(img, txt, vec)
    img = img + attn * img_attn
    txt = txt + attn * txt_attn
    img = img + mlp * block.img_mlp(torch.tanh(img))
    txt = txt + mlp * block.txt_mlp(torch.tanh(txt))
    return img0 + keep_img * (img - img0), txt0 + keep_txt * (txt - txt0)


@torch.no_grad()
def run(dit, family, texts, args):
    args = [a.clone() for a in args]
    orders = {stream: parse_steps(text, len(getattr(dit, stream)), stream) for stream, text in texts.items()}
    with planned_order(dit, family, orders, {}) as _:
        return dit(*args)


@torch.no_grad()
def reference(dit, args, per_block: dict):
    """The model with double block i computed by reference_double(**per_block[i]); None: the block skipped."""
    img, txt, vec = (a.clone() for a in args)
    for i, block in enumerate(dit.double_blocks):
        if i in per_block and per_block[i] is None:
            continue
        img, txt = reference_double(block, img, txt, vec, **per_block.get(i, {}))
    x = torch.cat((txt, img), 1)
    for block in dit.single_blocks:
        x = block(x, vec)
    return x[:, txt.shape[1]:]


@pytest.mark.parametrize("text, per_block", [
    ("0, 1@0.5, 2-3", {1: dict(keep_img=0.5, keep_txt=0.5)}),
    ("0, 1@-0.25, 2@1.75, 3", {1: dict(keep_img=-0.25, keep_txt=-0.25), 2: dict(keep_img=1.75, keep_txt=1.75)}),
    ("0, 1:attn, 2:mlp, 3", {1: dict(attn=0.0), 2: dict(mlp=0.0)}),
    ("0-1, 2:attn@0.5, 3:mlp@2", {2: dict(attn=0.5), 3: dict(mlp=2.0)}),
    ("0, 1:img, 2:txt@0.5, 3", {1: dict(keep_txt=0.0), 2: dict(keep_img=0.0, keep_txt=0.5)}),
    ("0, 1@0, 2:img@0, 3", {1: None, 2: None}),
    ("all:attn", {i: dict(attn=0.0) for i in range(4)}),
])
def test_modified_steps_match_a_reference_from_the_blocks_parts(text, per_block):
    dit, args = PartsDiT(), inputs(dim=DIM)
    got = run(dit, PARTS, {"double_blocks": text}, args)
    assert torch.allclose(got, reference(dit, args, per_block), rtol=0, atol=1e-6)


def test_strength_one_is_the_block_and_zero_the_skip_bit_for_bit():
    dit, args = PartsDiT(), inputs(dim=DIM)
    with torch.no_grad():
        plain = dit(*[a.clone() for a in args])
    assert torch.equal(run(dit, PARTS, {"double_blocks": "0-1, 2@1, 3:attn@1", "single_blocks": "0@1, 1-2"}, args), plain)
    assert torch.equal(run(dit, PARTS, {"double_blocks": "0, 1@0, 2-3"}, args),
                       run(dit, PARTS, {"double_blocks": "0, 2-3"}, args))


def test_strength_on_a_parallel_group_scales_the_averaged_update():
    dit, args = PartsDiT(), inputs(dim=DIM)
    with torch.no_grad():
        img, txt, vec = (a.clone() for a in args)
        img, txt = dit.double_blocks[0](img, txt, vec)
        outs = [reference_double(dit.double_blocks[i], img, txt, vec, attn=0.0) for i in (1, 2)]
        mean_img, mean_txt = (outs[0][0] + outs[1][0]) / 2, (outs[0][1] + outs[1][1]) / 2
        img, txt = img + 0.5 * (mean_img - img), txt
        img, txt = dit.double_blocks[3](img, txt, vec)
        x = torch.cat((txt, img), 1)
        for block in dit.single_blocks:
            x = block(x, vec)
        expected = x[:, txt.shape[1]:]
    # the group without attention, then keeping half of the image update and none of the text one
    grouped = run(dit, PARTS, {"double_blocks": "0, [1-2]:attn, 3"}, args)
    assert not torch.allclose(grouped, expected, atol=1e-6)
    scaled = _run_steps(dit, (  # parts and strength on one group cannot be written twice; compose by hand
        (0,), _mod((1, 2), 0.5, "img"), (3,)), args, sub_attn=True)
    assert torch.allclose(scaled, expected, rtol=0, atol=1e-6)


def _mod(step, strength, part):
    from dit_layer_lab.core.plan import Modified
    return Modified(step, strength, part)


@torch.no_grad()
def _run_steps(dit, steps, args, sub_attn):
    """Runs ``steps`` with the attention of blocks 1 and 2 zeroed by weights (another way to drop it)."""
    saved = {}
    if sub_attn:
        for i in (1, 2):
            for name in ("img_attn_out", "txt_attn_out"):
                layer = getattr(dit.double_blocks[i], name)
                saved[(i, name)] = (layer.weight.clone(), layer.bias.clone())
                layer.weight.zero_()
                layer.bias.zero_()
    try:
        args = [a.clone() for a in args]
        with planned_order(dit, PARTS, {"double_blocks": steps}, {}) as _:
            return dit(*args)
    finally:
        for (i, name), (w, b) in saved.items():
            getattr(dit.double_blocks[i], name).weight.copy_(w)
            getattr(dit.double_blocks[i], name).bias.copy_(b)


def test_one_stream_follows_the_layout_of_a_text_first_block():
    dit, args = TextFirstDiT(), inputs()
    with torch.no_grad():
        img, txt, vec = (a.clone() for a in args)
        for i, block in enumerate(dit.double_blocks):
            out_txt, out_img = block(hidden_states=img.clone(), encoder_hidden_states=txt.clone(), vec=vec)
            if i == 2:
                out_img, out_txt = img + 0.5 * (out_img - img), txt
            img, txt = out_img, out_txt
        x = torch.cat((txt, img), 1)
        for block in dit.single_blocks:
            x = block(x, vec)
        expected = x[:, txt.shape[1]:]
    assert torch.allclose(run(dit, TEXT_FIRST, {"double_blocks": "0-1, 2:img@0.5, 3-4"}, args), expected,
                          rtol=0, atol=1e-6)


@pytest.mark.parametrize("family, stream, text, fragment", [
    (PARTS, "single_blocks", "0:attn", "Parts single_blocks cannot do: its one projection mixes both"),
    (PARTS, "single_blocks", "1:img", "Parts single_blocks carry one sequence of text and image tokens"),
    (dataclasses.replace(PARTS, name="Undeclared", sublayers={}), "double_blocks", "0:mlp",
     "the Undeclared family does not declare where its double_blocks blocks' attention and MLP"),
])
def test_parts_a_family_lacks_are_refused_by_name(family, stream, text, fragment):
    steps = parse_steps(text, 3, stream)
    with pytest.raises(PlanError, match=fragment):
        family.check(stream, steps, 3)
    dit = PartsDiT()
    with pytest.raises(PlanError, match=fragment):
        run(dit, family, {stream: text}, inputs(dim=DIM))
    assert isinstance(dit.double_blocks, nn.ModuleList) and isinstance(dit.single_blocks, nn.ModuleList)


def test_plain_steps_run_the_blocks_themselves_and_hooks_are_removed():
    dit = PartsDiT()
    seen = {}

    def look(_):
        seen.update(double=dit.double_blocks.steps, single=dit.single_blocks.steps)

    orders = {"double_blocks": parse_steps("0, 1:attn, 2@0.5, 3", 4), "single_blocks": parse_steps("0-2", 3)}
    with planned_order(dit, PARTS, orders, {}) as _:
        look(None)
        assert isinstance(dit.double_blocks, PlannedBlocks)
    double, single = seen["double"], seen["single"]
    assert double[0] is dit.double_blocks[0] and double[3] is dit.double_blocks[3]
    assert isinstance(double[1], ScaledSublayer) and isinstance(double[2], ScaledUpdate)
    assert all(s is b for s, b in zip(single, dit.single_blocks))
    run(dit, PARTS, {"double_blocks": "0, 1:attn, 2-3"}, inputs(dim=DIM))
    assert all(not m._forward_hooks for m in dit.modules())


def test_sd3_last_joint_block_may_keep_part_of_its_update_but_still_only_last_and_alone():
    from dit_layer_lab.core.families.sd3 import SD3

    for text in ("0-2, 3@0.5", "0-2, 3:img", "0-2, 3:attn"):
        SD3.check("double_blocks", parse_steps(text, 4), 4)
    for text in ("3@0.5, 0-2", "0-1, [2-3]@0.5"):
        with pytest.raises(PlanError, match="SD3 joint block 3 is the last block"):
            SD3.check("double_blocks", parse_steps(text, 4), 4)
