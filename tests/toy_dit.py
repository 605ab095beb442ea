"""A small DiT on plain torch whose forward loop behaves like ComfyUI's Flux one.

Blocks update their inputs in place, ``patches_replace["dit"]`` and ControlNet residuals are
looked up by loop position, and the single stream runs on txt and img concatenated.
"""

import torch
from torch import nn

from dit_layer_lab.core.families import Family


class DoubleBlock(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.img = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)
        self.txt = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)

    def forward(self, img, txt, vec):
        joint = torch.tanh(img.mean(1, keepdim=True) + txt.mean(1, keepdim=True) + vec[:, None])
        img += torch.tanh(img @ self.img) + joint  # in place, as Flux does
        txt += torch.tanh(txt @ self.txt) - joint
        return img, txt


class SingleBlock(nn.Module):
    def __init__(self, dim, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)

    def forward(self, x, vec):
        x += torch.tanh(x @ self.w + vec[:, None])
        return x


class ToyDiT(nn.Module):
    def __init__(self, dim=8, double=5, single=6):
        super().__init__()
        self.double_blocks = nn.ModuleList(DoubleBlock(dim, 100 + i) for i in range(double))
        self.single_blocks = nn.ModuleList(SingleBlock(dim, 200 + i) for i in range(single))

    def forward(self, img, txt, vec, control=None, transformer_options={}):
        replace = transformer_options.get("patches_replace", {}).get("dit", {})
        for i, block in enumerate(self.double_blocks):
            if ("double_block", i) in replace:
                out = replace[("double_block", i)](
                    {"img": img, "txt": txt, "vec": vec},
                    {"original_block": lambda a, block=block: dict(zip(("img", "txt"), block(a["img"], a["txt"], a["vec"])))})
                img, txt = out["img"], out["txt"]
            else:
                img, txt = block(img=img, txt=txt, vec=vec)
            if control is not None and i < len(control["input"]) and control["input"][i] is not None:
                img += control["input"][i]
        x = torch.cat((txt, img), 1)
        for i, block in enumerate(self.single_blocks):
            if ("single_block", i) in replace:
                x = replace[("single_block", i)]({"img": x, "vec": vec},
                                                 {"original_block": lambda a, block=block: {"img": block(a["img"], a["vec"])}})["img"]
            else:
                x = block(x, vec)
            if control is not None and i < len(control["output"]) and control["output"][i] is not None:
                x[:, txt.shape[1]:] += control["output"][i]
        return x[:, txt.shape[1]:]


TOY = Family(
    name="Toy",
    classes=(f"{ToyDiT.__module__}.{ToyDiT.__qualname__}",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
)


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
