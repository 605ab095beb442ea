"""The model-file header reader on files written here: a valid safetensors header, and every way a
file can fail to be one (truncated, a huge length field, not JSON, GGUF or another format)."""

import json
import struct

import pytest

from dit_layer_lab.core.model_header import MAX_HEADER, HeaderError, read_header


def write(path, header_bytes, length=None, weights=b"\0" * 16):
    length = len(header_bytes) if length is None else length
    path.write_bytes(struct.pack("<Q", length) + header_bytes + weights)
    return path


def safetensors(path, table):
    return write(path, json.dumps(table).encode())


def test_reads_names_dtypes_shapes_and_metadata(tmp_path):
    table = {"__metadata__": {"format": "pt"},
             "blocks.0.weight": {"dtype": "BF16", "shape": [4, 2], "data_offsets": [0, 16]},
             "scale": {"dtype": "F32", "shape": [], "data_offsets": [16, 20]}}
    header = read_header(str(safetensors(tmp_path / "m.safetensors", table)))
    assert header.tensors == {"blocks.0.weight": ("BF16", (4, 2)), "scale": ("F32", ())}
    assert header.metadata == {"format": "pt"}


def test_reads_only_the_header(tmp_path):
    # weights that are not there (a file cut after its header) are never looked at
    path = tmp_path / "cut.safetensors"
    write(path, json.dumps({"w": {"dtype": "F16", "shape": [1000, 1000], "data_offsets": [0, 2_000_000]}}).encode(),
          weights=b"")
    assert read_header(str(path)).tensors == {"w": ("F16", (1000, 1000))}


def test_truncated_header(tmp_path):
    path = write(tmp_path / "t.safetensors", b'{"w": {"dtype": "F16"', length=500, weights=b"")
    with pytest.raises(HeaderError, match="t.safetensors is truncated: its header says 500 bytes"):
        read_header(str(path))


def test_shorter_than_the_length_field(tmp_path):
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(HeaderError, match="2 bytes long: too short"):
        read_header(str(path))


def test_huge_length_field_is_refused_without_reading(tmp_path):
    path = write(tmp_path / "huge.safetensors", b"{}", length=MAX_HEADER + 1)
    with pytest.raises(HeaderError, match=f"the header is read up to {MAX_HEADER} bytes"):
        read_header(str(path))
    path = write(tmp_path / "huger.safetensors", b"{}", length=2 ** 64 - 1)
    with pytest.raises(HeaderError, match="not a safetensors file"):
        read_header(str(path))


def test_header_not_json(tmp_path):
    with pytest.raises(HeaderError, match="not valid JSON"):
        read_header(str(write(tmp_path / "a.safetensors", b"{not json at all}")))
    with pytest.raises(HeaderError, match="b.safetensors is not a safetensors file"):
        read_header(str(write(tmp_path / "b.safetensors", b"[1, 2, 3]")))
    with pytest.raises(HeaderError, match="its header is not a JSON object"):
        read_header(str(write(tmp_path / "e.safetensors", b" [1]")))
    with pytest.raises(HeaderError, match="has dtype 'X99'"):
        read_header(str(safetensors(tmp_path / "c.safetensors", {"w": {"dtype": "X99", "shape": [1]}})))
    with pytest.raises(HeaderError, match="not a list of sizes"):
        read_header(str(safetensors(tmp_path / "d.safetensors", {"w": {"dtype": "F16", "shape": [-1]}})))


def gguf_string(text):
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_gguf(path, tensors, metadata=b"", kv_count=0, version=3):
    """A GGUF file: ``tensors`` maps a name to (GGML type, PyTorch shape); dimensions are written innermost first."""
    table = b"".join(gguf_string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *reversed(shape))
                     + struct.pack("<IQ", ggml_type, 0) for name, (ggml_type, shape) in tensors.items())
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", version, len(tensors), kv_count) + metadata + table)
    return path


def test_gguf_tensor_table(tmp_path):
    # metadata of every kind is skipped: a string, a number, an array of strings, an array of numbers
    metadata = (gguf_string("general.architecture") + struct.pack("<I", 8) + gguf_string("flux")
                + gguf_string("general.file_type") + struct.pack("<II", 4, 15)
                + gguf_string("tokens") + struct.pack("<IIQ", 9, 8, 2) + gguf_string("a") + gguf_string("bc")
                + gguf_string("scores") + struct.pack("<IIQ", 9, 6, 3) + b"\0" * 12)
    path = write_gguf(tmp_path / "model.gguf", {"double_blocks.0.img_attn.qkv.weight": (12, (9216, 3072)),
                                                "img_in.bias": (0, (3072,)), "txt_in.weight": (30, (3072, 4096))},
                      metadata, kv_count=4)
    header = read_header(str(path))
    assert header.tensors == {"double_blocks.0.img_attn.qkv.weight": ("Q4_K", (9216, 3072)),
                              "img_in.bias": ("F32", (3072,)), "txt_in.weight": ("BF16", (3072, 4096))}


def test_gguf_refusals(tmp_path):
    with pytest.raises(HeaderError, match="GGUF file of version 1; versions 2 and 3 are read"):
        read_header(str(write_gguf(tmp_path / "old.gguf", {}, version=1)))
    whole = write_gguf(tmp_path / "whole.gguf", {"w": (0, (4, 4))}).read_bytes()
    (tmp_path / "cut.gguf").write_bytes(whole[:-5])
    with pytest.raises(HeaderError, match="cut.gguf is truncated: its GGUF header ends after"):
        read_header(str(tmp_path / "cut.gguf"))
    huge = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2 ** 40) + b"key"
    (tmp_path / "huge.gguf").write_bytes(huge)
    with pytest.raises(HeaderError, match=f"its GGUF header is longer than {MAX_HEADER} bytes, the most that is read"):
        read_header(str(tmp_path / "huge.gguf"))
    with pytest.raises(HeaderError, match="GGML type 99, which is not known"):
        read_header(str(write_gguf(tmp_path / "odd.gguf", {"w": (99, (4,))})))


def test_other_formats(tmp_path):
    pickle_zip = tmp_path / "model.ckpt"
    pickle_zip.write_bytes(b"PK\x03\x04" + b"\0" * 200)  # a torch .ckpt / .pt is a zip archive
    with pytest.raises(HeaderError, match="model.ckpt is not a safetensors file"):
        read_header(str(pickle_zip))
    text = tmp_path / "notes.safetensors"
    text.write_bytes(b"hello world, this is text")
    with pytest.raises(HeaderError, match="not a safetensors file"):
        read_header(str(text))


def test_a_file_changed_while_read(tmp_path, monkeypatch):
    from dit_layer_lab.core import model_header

    path = safetensors(tmp_path / "growing.safetensors", {"w": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]}})
    sizes = iter([100, 200])  # as another process writes the file between the reader's two looks at it
    monkeypatch.setattr(model_header, "file_identity", lambda p: (p, next(sizes), 0))
    with pytest.raises(HeaderError, match="growing.safetensors changed while its header was read"):
        read_header(str(path))
