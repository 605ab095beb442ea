"""What the Comfy registry, ComfyUI Manager and the UI read from the package, checked without ComfyUI."""

import json
import pathlib
import re

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11 (tomllib)")

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_registry_fields():
    project, comfy = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]
    assert re.fullmatch(r"[a-z][a-z0-9]*(?:[-_.][a-z0-9]+)*", project["name"]) and "comfyui" not in project["name"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert (ROOT / project["license"]["file"]).is_file()
    assert project["urls"]["Repository"].startswith("https://")
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["Icon"].startswith("https://")
    # the web folder is declared once, by WEB_DIRECTORY: ComfyUI would serve a second
    # declaration in pyproject's [tool.comfy] web under another name, loading the script twice
    assert "web" not in comfy


def test_web_directory_exists():
    match = re.search(r'^WEB_DIRECTORY = "\./(\w+)"', (ROOT / "__init__.py").read_text(), re.M)
    assert match and any((ROOT / match.group(1)).glob("*.js"))


def test_requirements_add_nothing_comfyui_fights():
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    names = {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines if line}
    assert not names & {"torch", "torchvision", "torchaudio", "numpy", "pillow", "comfyui-frontend-package"}
    assert names == {dep.split("=")[0].lower() for dep in PYPROJECT["project"]["dependencies"]}


def test_there_are_example_workflows():
    assert len(WORKFLOWS) >= 6


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_links_are_consistent(path):
    graph = json.loads(path.read_text())
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert len(nodes) == len(graph["nodes"])
    assert any(node["type"].startswith("LayerLab") for node in nodes.values())
    for link_id, source, source_slot, target, target_slot, kind in graph["links"]:
        assert link_id in nodes[source]["outputs"][source_slot]["links"]
        target_input = nodes[target]["inputs"][target_slot]
        assert target_input["link"] == link_id
        assert kind == nodes[source]["outputs"][source_slot]["type"]
        assert target_input["type"] in (kind, "*")
    linked = {link[0] for link in graph["links"]}
    for node in nodes.values():
        for item in node.get("inputs", []):
            assert item["link"] is None or item["link"] in linked


def test_family_declarations_import_no_machinery():
    """core/families/* declare; the executor, probe and sweep import them, never the other way round."""
    import ast

    allowed = {"plan", "planned_blocks", "families", "layout"}
    for path in sorted((ROOT / "core" / "families").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = (node.module or "").split(".")[0] if node.level == 2 else "families"
                assert target in allowed, f"{path.name} imports ..{node.module}"
