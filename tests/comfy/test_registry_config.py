"""The package metadata as ComfyUI's own parser (the one shared with the registry's comfy-cli) reads it."""

import pathlib

import pytest

config_parser = pytest.importorskip("comfy_config.config_parser", reason="ComfyUI's requirements (pydantic-settings) are not installed")

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_comfyui_reads_the_registry_fields():
    config = config_parser.extract_node_configuration(str(ROOT))
    assert config.project.name == "dit-layer-lab"
    assert config.project.license.file == "LICENSE"
    assert config.project.urls.repository.startswith("https://github.com/")
    assert config.tool_comfy.publisher_id and config.tool_comfy.display_name == "DiT Layer Lab"
    assert config.tool_comfy.icon.endswith(".png")
    assert config.tool_comfy.web is None  # declared once, by WEB_DIRECTORY
    assert config.project.supported_comfyui_version == ">=0.8.0"
    assert config.project.supported_os == ["OS Independent"]
