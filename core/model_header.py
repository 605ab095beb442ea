"""The tensor table of a model file, read from its header only (never its weights).

A safetensors file starts with an 8-byte little-endian length N, then N bytes of JSON that map each
tensor name to its dtype, shape and byte range (and an optional "__metadata__" of strings). This
module reads exactly those bytes, checks them, and gives the names, dtypes and shapes. It imports
nothing from ComfyUI or torch, so it is tested without them.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field

MAX_HEADER = 100 * 1024 * 1024  # bytes of JSON a header may have; real ones are a few MB at most
MAX_TENSORS = 1_000_000
GGUF_MAGIC = b"GGUF"
# safetensors dtype names (the file format's own spelling)
DTYPES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
          "I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL", "C64")


class HeaderError(ValueError):
    """The file's header cannot be read; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Header:
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (safetensors dtype, shape)
    metadata: dict[str, str] = field(default_factory=dict)


def file_identity(path: str) -> tuple[str, int, int]:
    """(path, size, mtime in ns): what a cached answer about the file is keyed by."""
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def read_header(path: str, name: str | None = None, max_header: int = MAX_HEADER) -> Header:
    """The tensor table of the safetensors file at ``path`` (``name`` is how messages call it).

    Raises ``HeaderError`` for a GGUF file (not read yet), any other format, a header longer than
    ``max_header`` bytes, a truncated or malformed header, or a file that changed while it was read.
    """
    name = name or os.path.basename(path)
    before = file_identity(path)
    with open(path, "rb") as file:
        start = file.read(8)
        if start[:4] == GGUF_MAGIC:
            raise HeaderError(f"{name} is a GGUF file; its block counts are not read yet (only .safetensors)")
        if len(start) < 8:
            raise HeaderError(f"{name} is {len(start)} bytes long: too short for a safetensors header")
        (length,) = struct.unpack("<Q", start)
        if length > max_header:
            raise HeaderError(f"{name} is not a safetensors file, or its header is {length} bytes long; "
                              f"the header is read up to {max_header} bytes")
        first = file.read(1)
        if first and first not in b"{ \t\r\n":
            raise HeaderError(f"{name} is not a safetensors file (no JSON header after its length field)")
        if length > before[1] - 8:
            raise HeaderError(f"{name} is truncated: its header says {length} bytes, the file has {before[1] - 8} "
                              "after the length")
        raw = first + file.read(length - len(first))
    if file_identity(path) != before:
        raise HeaderError(f"{name} changed while its header was read; try again once it is written")
    if len(raw) < length:
        raise HeaderError(f"{name} is truncated: its header is {length} bytes, {len(raw)} could be read")
    if not raw.lstrip().startswith(b"{"):
        raise HeaderError(f"{name} is not a safetensors file (its header is not a JSON object)")
    try:
        table = json.loads(raw)
    except (ValueError, RecursionError):
        raise HeaderError(f"{name} is not a safetensors file (its header is not valid JSON)") from None
    return _checked(table, name)


def _checked(table, name: str) -> Header:
    if not isinstance(table, dict):
        raise HeaderError(f"{name}: a safetensors header is a JSON object of tensors")
    metadata = table.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise HeaderError(f"{name}: its __metadata__ is not an object")
    if len(table) > MAX_TENSORS:
        raise HeaderError(f"{name} lists {len(table)} tensors; at most {MAX_TENSORS} are read")
    tensors = {}
    for key, entry in table.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if dtype not in DTYPES:
            raise HeaderError(f"{name}: tensor {key[:100]!r} has dtype {dtype!r:.40}; known: {', '.join(DTYPES)}")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                   for n in shape):
            raise HeaderError(f"{name}: tensor {key[:100]!r} has shape {shape!r:.60}, not a list of sizes")
        tensors[key] = (dtype, tuple(shape))
    return Header(tensors, {str(k): v for k, v in metadata.items() if isinstance(v, str)})
