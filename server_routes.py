"""The pack's HTTP route: what a node's block inputs will do, for the strip the frontend draws on it.

    GET  /dit_layer_lab/preview   which node types have a strip, and which of their inputs it reads
    POST /dit_layer_lab/preview   {"node_type", "inputs", "counts"?, "family"?, "counts_unknown"?} -> core.preview's
                                  answer; without "counts", the counts are unknown ("counts_unknown" says why)
    POST /dit_layer_lab/model_blocks   {"loader", "name"} -> {"known": true, "family", "counts", ...} of that
                                       model file, read from its header (core.model_blocks), or
                                       {"known": false, "error"}; a malformed request gets a 400

ComfyUI also serves both under /api. The route is thin: ``answer`` checks the request and calls
``core.preview``; it imports nothing from ComfyUI, so it is tested without a server.

The route never holds ComfyUI's server, and the work runs on a worker thread, off its event loop.
What a request may carry is bounded (its body, each text input, the block counts): a request
beyond that gets a 400 that names the limit, and the strip, which GET tells these limits, never
sends one. What one answer computes is bounded too (plan lines, steps; see core.preview): beyond
that, the answer says so in "refused".
"""

from __future__ import annotations

import asyncio
import json

from .core.model_blocks import LOADERS, MAX_NAME
from .core.preview import UNKNOWN_NOTE, preview_lines, preview_plan, preview_selection, preview_strategy

PATH = "/dit_layer_lab/preview"
MODEL_BLOCKS_PATH = "/dit_layer_lab/model_blocks"
MAX_BODY = 256 * 1024  # bytes of one request
MAX_MODEL_BODY = 4096  # bytes of one model_blocks request: a loader type and a file name
MAX_TEXT = 10_000  # characters of one text input
MAX_REASON = 1000  # characters of why the counts are unknown (a model_blocks error, quoted by the strip)

_RANGE = ["stream", "first", "last"]
_WINDOW = ["start_percent", "end_percent"]
_BLOCK_TEXTS = ["double_blocks", "single_blocks"]

# node type -> what its strip shows and the inputs it reads (the frontend sends exactly these)
NODES = {
    "LayerLabPlan": {"kind": "plan", "inputs": _BLOCK_TEXTS},
    "LayerLabPlanGuidance": {"kind": "plan", "inputs": _BLOCK_TEXTS},  # the plan of its extra pass
    "LayerLabSkip": {"kind": "strategy", "strategy": "skip", "inputs": [*_RANGE, *_WINDOW]},
    "LayerLabRepeat": {"kind": "strategy", "strategy": "repeat", "inputs": [*_RANGE, "layer", "count", *_WINDOW]},
    "LayerLabReverse": {"kind": "strategy", "strategy": "reverse", "inputs": [*_RANGE, *_WINDOW]},
    "LayerLabParallel": {"kind": "strategy", "strategy": "parallel", "inputs": [*_RANGE, "loops", *_WINDOW]},
    "LayerLabShuffle": {"kind": "strategy", "strategy": "shuffle", "inputs": [*_RANGE, "seed", *_WINDOW]},
    "LayerLabLoraBlocks": {"kind": "selection", "inputs": _BLOCK_TEXTS},
    "LayerLabLoraBlocksSave": {"kind": "selection", "inputs": _BLOCK_TEXTS},
    "LayerLabPlanGrid": {"kind": "lines", "inputs": ["plans"]},
}
_STRATEGY_PARAMS = ("layer", "count", "loops", "seed")


class BadRequest(ValueError):
    pass


def describe() -> dict:
    """The answer to GET: the node types with a strip and the inputs each one reads."""
    return {"nodes": NODES, "limits": {"max_body": MAX_BODY, "max_text": MAX_TEXT, "max_name": MAX_NAME},
            "loaders": {loader: widget for loader, (widget, _) in LOADERS.items()}}


def answer(body) -> dict:
    """The answer to POST; raises ``BadRequest`` for a request the frontend should never send."""
    if not isinstance(body, dict):
        raise BadRequest("the request body is a JSON object")
    node_type = body.get("node_type")
    spec = NODES.get(node_type)
    if spec is None:
        raise BadRequest(f"node_type {_short(node_type)} has no preview; known: {', '.join(NODES)}")
    inputs = body.get("inputs")
    if not isinstance(inputs, dict):
        raise BadRequest("'inputs' is an object of the node's input values")
    missing = [name for name in spec["inputs"] if name not in inputs]
    if missing:
        raise BadRequest(f"{node_type} needs the inputs {', '.join(missing)}")
    counts, family = _counts(body.get("counts")), body.get("family")
    if family is not None and (not isinstance(family, str) or len(family) > 100):
        raise BadRequest(f"'family' is a model family name, got {_short(family)}")
    unknown = body.get("counts_unknown")
    if unknown is not None and (not isinstance(unknown, str) or len(unknown) > MAX_REASON):
        raise BadRequest(f"'counts_unknown' is why the block counts are unknown, at most {MAX_REASON} characters")
    if counts is None:  # never invented: without the model's counts, the answer says they are unknown
        unknown = unknown or UNKNOWN_NOTE
    elif unknown is not None:
        raise BadRequest("a request carries either 'counts' or 'counts_unknown', not both")
    try:
        if spec["kind"] == "plan":
            return preview_plan(_texts(inputs), counts, family, unknown)
        if spec["kind"] == "selection":
            return preview_selection(_texts(inputs), counts, family, unknown)
        if spec["kind"] == "lines":
            return preview_lines(_text(inputs, "plans"), counts, family, unknown)
        params = {name: _integer(inputs, name) for name in _STRATEGY_PARAMS if name in spec["inputs"]}
        return preview_strategy(spec["strategy"], _text(inputs, "stream"), _integer(inputs, "first"),
                                _integer(inputs, "last"), params, counts, family,
                                _number(inputs, "start_percent"), _number(inputs, "end_percent"), unknown)
    except BadRequest:
        raise
    except ValueError as error:  # counts that are not block counts
        raise BadRequest(str(error)) from None


def respond(raw: bytes) -> tuple[int, dict]:
    """The status and JSON answer for a POST body: 200 with ``answer``'s result, or 400 with the reason."""
    if len(raw) > MAX_BODY:
        return 400, {"error": _too_large(len(raw))}
    try:
        body = json.loads(raw)
    except ValueError:
        return 400, {"error": "the request body is not JSON"}
    except RecursionError:
        return 400, {"error": "the request body nests too deeply"}
    try:
        return 200, answer(body)
    except BadRequest as error:
        return 400, {"error": str(error)}


def respond_model_blocks(raw: bytes) -> tuple[int, dict]:
    """The status and JSON answer for a model_blocks POST body: 400 for a malformed request (the strip never
    sends one); else 200 with {"known": true, the model's family and counts}, or {"known": false, "error"}
    for a file not in the loader's model folders, one that cannot be read, or a model the pack does not
    support. These are answers, not failures: a shared workflow often names a file this machine lacks,
    and the strip shows the reason. Every error names the input and what is wrong."""
    from .core.model_blocks import ModelBlocksError, model_blocks  # imports ComfyUI's folder_paths

    if len(raw) > MAX_MODEL_BODY:
        return 400, {"error": f"the request body is {len(raw)} bytes; a model_blocks request is at most {MAX_MODEL_BODY}"}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return 400, {"error": "the request body is not JSON"}
    if not isinstance(body, dict) or not isinstance(body.get("loader"), str):
        return 400, {"error": f"the request body is {{\"loader\": one of {', '.join(LOADERS)}, \"name\": a file name}}"}
    try:
        return 200, {"known": True, **model_blocks(body["loader"], body.get("name"))}
    except ModelBlocksError as error:
        return (400, {"error": str(error)}) if error.status == 400 else (200, {"known": False, "error": str(error)})
    except OSError as error:
        return 200, {"known": False, "error": f"{_short(body.get('name'))} cannot be read: {error.strerror or error}"}


def register(routes) -> None:
    """Add GET and POST ``PATH`` to ComfyUI's ``PromptServer.instance.routes`` (an aiohttp RouteTableDef)."""
    from aiohttp import web

    if any(getattr(route, "path", None) == PATH for route in routes):
        return

    @routes.get(PATH)
    async def get_preview(request):
        return web.json_response(describe())

    @routes.post(PATH)
    async def post_preview(request):
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": _too_large(request.content_length)}, status=400)
        raw = bytearray()
        async for chunk in request.content.iter_any():  # a body without a length: stop reading at the limit
            raw += chunk
            if len(raw) > MAX_BODY:
                return web.json_response({"error": _too_large(f"more than {len(raw)}")}, status=400)
        status, result = await asyncio.to_thread(_respond_text, bytes(raw))
        return web.Response(text=result, status=status, content_type="application/json")

    @routes.post(MODEL_BLOCKS_PATH)
    async def post_model_blocks(request):
        if request.content_length is not None and request.content_length > MAX_MODEL_BODY:
            return web.json_response({"error": f"the request body is {request.content_length} bytes; a "
                                               f"model_blocks request is at most {MAX_MODEL_BODY}"}, status=400)
        raw = bytearray()
        async for chunk in request.content.iter_any():
            raw += chunk
            if len(raw) > MAX_MODEL_BODY:
                return web.json_response({"error": f"the request body is more than {MAX_MODEL_BODY} bytes; a "
                                                   f"model_blocks request is at most {MAX_MODEL_BODY}"}, status=400)
        # reading a header and building a model on the meta device take a while: off the event loop
        status, result = await asyncio.to_thread(_respond_text, bytes(raw), respond_model_blocks)
        return web.Response(text=result, status=status, content_type="application/json")


def _respond_text(raw: bytes, respond_to=None) -> tuple[int, str]:
    status, result = (respond_to or respond)(raw)
    return status, json.dumps(result)


def _too_large(size) -> str:
    return f"the request body is {size} bytes; the preview reads at most {MAX_BODY}"


def _counts(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("'counts' maps double_blocks and single_blocks to block counts")
    return value


def _texts(inputs: dict) -> dict:
    return {name: _text(inputs, name) for name in _BLOCK_TEXTS}


def _text(inputs: dict, name: str) -> str:
    value = inputs[name]
    if not isinstance(value, str):
        raise BadRequest(f"input {name!r} is text, got {_short(value)}")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"input {name!r} is {len(value)} characters long; the preview reads at most {MAX_TEXT}")
    return value


def _integer(inputs: dict, name: str) -> int:
    value = inputs[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"input {name!r} is a whole number, got {_short(value)}")
    return value


def _number(inputs: dict, name: str) -> float:
    value = inputs[name]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise BadRequest(f"input {name!r} is a number, got {_short(value)}")
    return float(value)


def _short(value, limit: int = 60) -> str:
    """A value as an error message quotes it: its repr, cut at ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
