"""A small DiT on plain torch whose forward loop behaves like ComfyUI's Flux one.

Blocks update their inputs in place, ``patches_replace["dit"]`` and ControlNet residuals are
looked up by loop position, and the single stream runs on txt and img concatenated. Like Flux, the
loop writes ``transformer_options["block_index"]`` before each block (a block appends the index it
was told to ``transformer_options["told"]``, if present), and like Qwen-Image and Wan it calls
``transformer_options["patches"]["double_block"]`` after each double block with ``"block_index": i``.
"""

import dataclasses

import torch
from torch import nn

from dit_layer_lab.core.families import Family, Layout


def _tell(block, transformer_options):
    if transformer_options is not None and "told" in transformer_options:
        transformer_options["told"].append((block, transformer_options["block_index"]))


class DoubleBlock(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.img = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)
        self.txt = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)

    def forward(self, img, txt, vec, transformer_options=None):
        _tell(self, transformer_options)
        joint = torch.tanh(img.mean(1, keepdim=True) + txt.mean(1, keepdim=True) + vec[:, None])
        img += torch.tanh(img @ self.img) + joint  # in place, as Flux does
        txt += torch.tanh(txt @ self.txt) - joint
        return img, txt


class SingleBlock(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)

    def forward(self, x, vec, transformer_options=None):
        _tell(self, transformer_options)
        x += torch.tanh(x @ self.w + vec[:, None])
        return x


class ToyDiT(nn.Module):
    def __init__(self, dim=8, double=5, single=6):
        super().__init__()
        self.double_blocks = nn.ModuleList(DoubleBlock(dim, 100 + i) for i in range(double))
        self.single_blocks = nn.ModuleList(SingleBlock(dim, 200 + i) for i in range(single))

    def forward(self, img, txt, vec, control=None, transformer_options={}):
        options = transformer_options.copy()
        replace = options.get("patches_replace", {}).get("dit", {})
        index_patches = options.get("patches", {}).get("double_block", [])
        for i, block in enumerate(self.double_blocks):
            options["block_index"] = i
            if ("double_block", i) in replace:
                out = replace[("double_block", i)](
                    {"img": img, "txt": txt, "vec": vec, "transformer_options": options},
                    {"original_block": lambda a, block=block: dict(zip(("img", "txt"), self._double(
                        block, a["img"], a["txt"], a["vec"], a["transformer_options"])))})
                img, txt = out["img"], out["txt"]
            else:
                img, txt = self._double(block, img, txt, vec, options)
            for patch in index_patches:
                img = patch({"img": img, "txt": txt, "block_index": i, "transformer_options": options})["img"]
            if control is not None and i < len(control["input"]) and control["input"][i] is not None:
                img += control["input"][i]
        x = torch.cat((txt, img), 1)
        for i, block in enumerate(self.single_blocks):
            options["block_index"] = i
            if ("single_block", i) in replace:
                x = replace[("single_block", i)](
                    {"img": x, "vec": vec, "transformer_options": options},
                    {"original_block": lambda a, block=block: {"img": block(
                        a["img"], a["vec"], transformer_options=a["transformer_options"])}})["img"]
            else:
                x = block(x, vec, transformer_options=options)
            if control is not None and i < len(control["output"]) and control["output"][i] is not None:
                x[:, txt.shape[1]:] += control["output"][i]
        return x[:, txt.shape[1]:]

    def _double(self, block, img, txt, vec, options):
        """(img, txt) after ``block``."""
        return block(img=img, txt=txt, vec=vec, transformer_options=options)


class TextFirstDoubleBlock(DoubleBlock):
    """A double block with Qwen-Image's call layout: keyword-only states, text returned first."""

    def forward(self, *, hidden_states, encoder_hidden_states, vec, transformer_options=None):
        img, txt = super().forward(hidden_states, encoder_hidden_states, vec, transformer_options)
        return txt, img


class TextFirstDiT(ToyDiT):
    """ToyDiT, same weights, whose double blocks take and return their states as Qwen-Image's do."""

    def __init__(self, dim=8, double=5, single=6):
        super().__init__(dim, double, single)
        self.double_blocks = nn.ModuleList(TextFirstDoubleBlock(dim, 100 + i) for i in range(double))

    def _double(self, block, img, txt, vec, options):
        txt, img = block(hidden_states=img, encoder_hidden_states=txt, vec=vec, transformer_options=options)
        return img, txt


TOY = Family(
    name="Toy",
    classes=(f"{ToyDiT.__module__}.{ToyDiT.__qualname__}",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
    index_patches={"double_blocks": "double_block"},
)
TEXT_FIRST = dataclasses.replace(
    TOY, name="TextFirst", classes=(f"{TextFirstDiT.__module__}.{TextFirstDiT.__qualname__}",),
    hidden_states={"double_blocks": Layout.of(hidden_states="image", encoder_hidden_states="text",
                                              returns=("text", "image")),
                   "single_blocks": Layout.of(x="text+image")})


def inputs(seed=0, batch=2, img_tokens=6, txt_tokens=3, dim=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, img_tokens, dim, generator=g), torch.randn(batch, txt_tokens, dim, generator=g),
            torch.randn(batch, dim, generator=g))


@torch.no_grad()
def reference(dit, orders, img, txt, vec, control=None):
    """The planned computation written out directly: no list swapping, no executor code."""
    img, txt = img.clone(), txt.clone()

    def residual(key, i):
        if control is None or i >= len(control[key]) or control[key][i] is None:
            return 0
        return control[key][i]

    for step in orders.get("double_blocks", [(i,) for i in range(len(dit.double_blocks))]):
        outs = [dit.double_blocks[i](img.clone(), txt.clone(), vec) for i in step]
        img = sum(o[0] + residual("input", i) for o, i in zip(outs, step)) / len(step)
        txt = sum(o[1] for o in outs) / len(step)
    x = torch.cat((txt, img), 1)
    for step in orders.get("single_blocks", [(i,) for i in range(len(dit.single_blocks))]):
        outs = []
        for i in step:
            out = dit.single_blocks[i](x.clone(), vec)
            out[:, txt.shape[1]:] += residual("output", i)
            outs.append(out)
        x = sum(outs) / len(step)
    return x[:, txt.shape[1]:]
