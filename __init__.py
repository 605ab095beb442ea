"""DiT Layer Lab: run a diffusion transformer's blocks in any order, probe them, LoRA them."""


async def comfy_entrypoint():
    from .nodes import LayerLabExtension

    return LayerLabExtension()
