"""DiT Layer Lab: run a diffusion transformer's blocks in any order, probe them, LoRA them."""

import logging
import sys

WEB_DIRECTORY = "./js"  # the block strip drawn on plan, strategy and LoRA block nodes


async def comfy_entrypoint():
    from .nodes import LayerLabExtension

    _register_routes()
    return LayerLabExtension()


def _register_routes():
    """Add the strip's preview route to ComfyUI's server, when one is running (not in plain tests)."""
    server = sys.modules.get("server")
    instance = getattr(getattr(server, "PromptServer", None), "instance", None)
    if instance is None:
        return
    try:
        from .server_routes import register

        register(instance.routes)
    except Exception:  # the nodes work without the strip; never let the route take them down
        logging.getLogger(__name__).warning("DiT Layer Lab: the block strip's route could not be added",
                                            exc_info=True)
