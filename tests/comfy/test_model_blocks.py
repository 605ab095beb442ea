"""A model file's family and block counts from its header alone, by ComfyUI's own detection.

For every family the reorder tests build, the tiny model's diffusion-model state dict is saved as a
safetensors file the way a downloaded diffusion model stores it (bare keys, ``double_blocks.0...``)
and as a checkpoint stores it (``model.diffusion_model.`` first); the answer read from the header
must name the family and the block counts of the loaded model.
"""

import json
import pathlib

import pytest

import comfy.sd
import comfyui_version
import comfy.utils
from dit_layer_lab.core import families
from dit_layer_lab.core.model_blocks import LOADERS, ModelBlocksError, blocks_from_header
from dit_layer_lab.core.model_header import read_header
from dit_layer_lab.tests.comfy.real_headers import EXAMPLE_FILES, OTHER_RELEASES
from dit_layer_lab.tests.comfy.test_reorder import FAMILIES

# Tiny files are not real models. Where ComfyUI's detection derives a size from the file that the
# tiny model does not have, or fixes a depth, the model ComfyUI builds from the file is not the tiny
# model (and its loader refuses the tiny file's weights): for these families the answer differs from the
# tiny model, as ComfyUI's own loader does, and the reason is given.
NOT_THE_TINY_MODEL = {
    "flux": "detection derives the heads from the width (hidden // 128): the tiny width 64 gives 0 heads",
    "flux2": "heads from the width (hidden // 128): 0 for the tiny width",
    "flux2_klein": "heads from the width (hidden // 128): 0 for the tiny width",
    "longcat": "heads from the width (hidden // 128): 0 for the tiny width",
    "chroma": "heads from the width (hidden // 128): 0 for the tiny width",
    "chroma_radiance": "heads from the width (hidden // 128): 0 for the tiny width",
    "hunyuan_image21": "heads from the width (hidden // 128): 0 for the tiny width",
    "hunyuan_video": "heads from the width (hidden // 128): 0 for the tiny width",
    "hunyuan_video15": "heads from the width (hidden // 128): 0 for the tiny width",
    "krea2": "heads from the width: 0 for the tiny width",
    "lumina2": "detection fixes head sizes the tiny width does not divide",
    "z_image": "detection fixes head sizes the tiny width does not divide",
    "sd3": "detection sets the depth from the width (x_embedder width // 64), not from the blocks in the file",
    "hidream": "detection fixes 16 double and 32 single blocks",
    "omnigen2": "detection fixes 32 layers",
    "ernie_image": "the class default of 36 layers is used",
    "auraflow": "detection does not recognise the tiny file",
}
# families whose depth ComfyUI's detection fixes: the released model's counts
FIXED_DEPTH = {"hidream": {"double_blocks": 16, "single_blocks": 32},
               "omnigen2": {"double_blocks": 0, "single_blocks": 32},
               "ernie_image": {"double_blocks": 0, "single_blocks": 36}}
HOST = tuple(int(part) for part in comfyui_version.__version__.split(".")[:2])
if HOST < (0, 33):
    NOT_THE_TINY_MODEL["cosmos_predict2"] = "before 0.33, detection fixes the depth by the width (28 or 36 blocks)"


def save(model, path, prefix=""):
    state_dict = model.model.diffusion_model.state_dict()
    comfy.utils.save_torch_file({prefix + key: value.contiguous() for key, value in state_dict.items()}, str(path))
    return path


def described(dit):
    family = families.detect(dit)
    return {"family": family.name, "counts": family.block_counts(dit), "list_names": dict(family.list_names()),
            "model_class": f"{type(dit).__module__}.{type(dit).__qualname__}"}


def comfyui_loads(path):
    """What ComfyUI's UNETLoader makes of the file, described as the answer is; or the loader's error."""
    try:
        patcher = comfy.sd.load_diffusion_model(str(path))
    except Exception as error:
        return error
    return described(patcher.model.diffusion_model)


def answer_for(path):
    try:
        return blocks_from_header(read_header(str(path)), path.name)
    except ModelBlocksError as error:
        return error


@pytest.mark.parametrize("name", [name for name in FAMILIES if name not in NOT_THE_TINY_MODEL])
def test_header_gives_the_loaded_models_family_and_counts(name, tmp_path):
    model = FAMILIES[name][0]()
    for prefix in ("", "model.diffusion_model."):  # a diffusion model file; a checkpoint's model keys
        path = save(model, tmp_path / f"{name}.safetensors", prefix)
        assert answer_for(path) == described(model.model.diffusion_model), prefix


@pytest.mark.parametrize("name", sorted(NOT_THE_TINY_MODEL))
def test_the_listed_families_differ_as_comfyui_loads_them(name, tmp_path):
    """Each reason still holds: neither ComfyUI's loader nor the header gives the tiny model, and where the
    header cannot be built into a model the answer says so, naming the file."""
    model = FAMILIES[name][0]()
    path = save(model, tmp_path / f"{name}.safetensors")
    tiny = described(model.model.diffusion_model)
    assert comfyui_loads(path) != tiny
    answer = answer_for(path)
    assert answer != tiny
    if isinstance(answer, ModelBlocksError):
        assert path.name in str(answer)
    else:
        assert answer["family"] == tiny["family"]  # the family is right; the counts are ComfyUI's
        if name in FIXED_DEPTH:  # those of the released model, whatever the file holds
            assert answer["counts"] == FIXED_DEPTH[name]


def test_a_file_comfyui_does_not_recognise(tmp_path):
    import torch

    path = tmp_path / "not_a_model.safetensors"
    comfy.utils.save_torch_file({"some.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(ModelBlocksError, match="ComfyUI does not recognise a diffusion model in not_a_model"):
        blocks_from_header(read_header(str(path)), path.name)


def test_a_model_the_pack_does_not_support_is_named(tmp_path):
    import torch

    # ComfyUI detects Genmo Mochi from this one tensor name and fixes its full size (48 blocks of width
    # 3072): the model is built on the meta device, nothing allocated, and the pack does not support it
    path = tmp_path / "mochi.safetensors"
    comfy.utils.save_torch_file({"t5_yproj.weight": torch.zeros(1)}, str(path))
    with pytest.raises(ModelBlocksError, match=r"^not a supported model: comfy\.ldm\.genmo\.joint_model\."):
        blocks_from_header(read_header(str(path)), path.name)


EXAMPLES = sorted((pathlib.Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json"))


def loader_files(workflow: dict) -> set[str]:
    """The model files a workflow's loaders (those the strip reads before a run) name."""
    return {node["widgets_values"][0] for node in workflow["nodes"] if node["type"] in LOADERS}


def test_every_example_workflow_s_model_file_has_a_real_header_placeholder():
    named = set().union(*(loader_files(json.loads(path.read_text())) for path in EXAMPLES))
    assert named and named == set(EXAMPLE_FILES)


RELEASES = {**EXAMPLE_FILES, **OTHER_RELEASES}
# what a host's detection does not know yet
NOT_DETECTED = {"flux-2-klein-4b.safetensors": ((0, 33), "before 0.33, detection fixes Flux.2's heads at 48 "
                                                         "(Klein's 24 give another rope width)")}


@pytest.mark.parametrize("name", sorted(RELEASES))
def test_a_released_model_s_header_gives_its_lists(name, tmp_path):
    """The released model's real widths and depths (built on the meta device, written as a header without
    weights): ComfyUI's detection and the meta build give the family and block counts it is known by."""
    if name in NOT_DETECTED and HOST < NOT_DETECTED[name][0]:
        pytest.skip(NOT_DETECTED[name][1])
    real = RELEASES[name]
    path = real.write(tmp_path / name)
    assert path.stat().st_size < 1_000_000  # the header alone
    answer = blocks_from_header(read_header(str(path)), path.name)
    assert (answer["family"], answer["counts"]) == (real.family, real.counts)


def write_gguf_header(path, state_dict):
    """A GGUF file (version 3) listing ``state_dict``'s tensors as F32, with no weights: as ComfyUI-GGUF's
    UnetLoaderGGUF files name a diffusion model's tensors (the original names, dimensions innermost first)."""
    import struct

    def string(text):
        return struct.pack("<Q", len(text.encode())) + text.encode()

    table = b"".join(string(key) + struct.pack("<I", tensor.dim()) + struct.pack(f"<{tensor.dim()}Q", *reversed(tensor.shape))
                     + struct.pack("<IQ", 0, 0) for key, tensor in state_dict.items())
    metadata = string("general.architecture") + struct.pack("<I", 8) + string("wan")
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, len(state_dict), 1) + metadata + table)
    return path


@pytest.mark.parametrize("name", [name for name in FAMILIES if name not in NOT_THE_TINY_MODEL])
def test_a_gguf_header_gives_the_loaded_models_family_and_counts(name, tmp_path):
    model = FAMILIES[name][0]()
    path = write_gguf_header(tmp_path / f"{name}.gguf", model.model.diffusion_model.state_dict())
    assert answer_for(path) == described(model.model.diffusion_model)
