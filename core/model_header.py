"""The tensor table of a model file, read from its header only (never its weights).

A safetensors file starts with an 8-byte little-endian length N, then N bytes of JSON that map each
tensor name to its dtype, shape and byte range (and an optional "__metadata__" of strings). A GGUF
file (versions 2 and 3) starts with "GGUF", its version, its tensor and metadata counts, the metadata
key-value pairs, then one entry per tensor: name, dimensions (innermost first), type and offset.
This module reads exactly those bytes, at most ``MAX_HEADER`` of them, checks them, and gives the
names, dtypes and shapes (a GGUF tensor's shape in PyTorch's order; a quantized type keeps its GGML
name, such as "Q4_K"). It imports nothing from ComfyUI or torch, so it is tested without them.
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
            header = _GgufReader(file, name, max_header, start).header()
            if file_identity(path) != before:
                raise HeaderError(f"{name} changed while its header was read; try again once it is written")
            return header
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


# GGML tensor types: the plain ones by their safetensors name, the quantized ones by their GGML name
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS",
              19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
              27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0"}
# GGUF metadata value types -> the size of one value (8: string, 9: array are read apart)
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
MAX_DIMS = 8


class _GgufReader:
    """Reads a GGUF file's metadata (skipped) and tensor table, counting every byte against the limit."""

    def __init__(self, file, name: str, limit: int, start: bytes):
        self.file, self.name, self.limit, self.used = file, name, limit, 8
        self.pending = start[4:]  # the version, read with the magic

    def header(self) -> Header:
        (version,) = struct.unpack("<I", self.read(4))
        if version not in (2, 3):
            raise HeaderError(f"{self.name} is a GGUF file of version {version}; versions 2 and 3 are read")
        tensor_count, kv_count = struct.unpack("<QQ", self.read(16))
        if tensor_count > MAX_TENSORS:
            raise HeaderError(f"{self.name} lists {tensor_count} tensors; at most {MAX_TENSORS} are read")
        for _ in range(kv_count):
            self.string()
            self.skip_value(self.u32())
        tensors = {}
        for _ in range(tensor_count):
            key = self.string()
            n_dims = self.u32()
            if n_dims > MAX_DIMS:
                raise HeaderError(f"{self.name}: tensor {key[:100]!r} has {n_dims} dimensions; at most {MAX_DIMS}")
            dims = struct.unpack(f"<{n_dims}Q", self.read(8 * n_dims))
            ggml_type = self.u32()
            self.read(8)  # the offset of its data
            if ggml_type not in GGML_TYPES:
                raise HeaderError(f"{self.name}: tensor {key[:100]!r} has GGML type {ggml_type}, which is not known")
            tensors[key] = (GGML_TYPES[ggml_type], tuple(reversed(dims)))
        return Header(tensors, {"format": "gguf"})

    def read(self, size: int) -> bytes:
        if self.used + size > self.limit:
            raise HeaderError(f"{self.name}: its GGUF header is longer than {self.limit} bytes, the most that is read")
        self.used += size
        data = self.pending[:size]
        self.pending = self.pending[size:]
        if len(data) < size:
            data += self.file.read(size - len(data))
        if len(data) < size:
            raise HeaderError(f"{self.name} is truncated: its GGUF header ends after {self.used - size + len(data)} "
                              "bytes")
        return data

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def string(self) -> str:
        (length,) = struct.unpack("<Q", self.read(8))
        return self.read(length).decode("utf-8", errors="replace")

    def skip_value(self, value_type: int) -> None:
        if value_type == 8:
            self.string()
        elif value_type == 9:
            item_type = self.u32()
            (count,) = struct.unpack("<Q", self.read(8))
            if item_type in _GGUF_SIZES:
                self.read_skipped(count * _GGUF_SIZES[item_type])
            else:
                for _ in range(count):
                    self.skip_value(item_type)
        elif value_type in _GGUF_SIZES:
            self.read(_GGUF_SIZES[value_type])
        else:
            raise HeaderError(f"{self.name}: a GGUF metadata value of type {value_type}, which is not known")

    def read_skipped(self, size: int) -> None:
        """Skip ``size`` bytes of metadata without holding them (a tokenizer's arrays can be large)."""
        while size:
            chunk = min(size, 1 << 20)
            self.read(chunk)
            size -= chunk
