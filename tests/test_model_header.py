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


def test_gguf_is_named_and_not_read(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 64)
    with pytest.raises(HeaderError, match="model.gguf is a GGUF file; its block counts are not read yet"):
        read_header(str(path))


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
