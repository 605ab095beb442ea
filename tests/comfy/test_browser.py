"""The pack in ComfyUI's real web UI: the real server on loopback, headless Chromium driven by Playwright.

Needs, besides ``COMFYUI_PATH`` (see conftest.py): ComfyUI's server requirements, a Chromium
(``chromium`` on PATH, or ``LAYER_LAB_CHROMIUM``), Node.js and ``npm ci --prefix tests/browser``
(playwright-core only; it never downloads a browser). Without them these tests skip with the reason.

One browser session (tests/browser/drive.mjs) does everything and reports what it saw; the tests
below check that report. With ``LAYER_LAB_SCREENSHOTS=1`` it also writes docs/strip.png and
docs/strip_error.png.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.parse

import pytest

from dit_layer_lab.core.preview import preview_plan
from dit_layer_lab.tests.comfy import live_server

ROOT = live_server.ROOT
COMFYUI_PATH = pathlib.Path(os.environ.get("COMFYUI_PATH", ".")).expanduser().resolve()  # conftest checked it
DRIVER = ROOT / "tests" / "browser" / "drive.mjs"
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
EXTENSION = "dit_layer_lab.block_strip"

# What the UI logs on a machine without internet access, none of it about this pack: look-ups of
# outside hosts, and 404s for the user's optional files.
OPTIONAL_FILES = re.compile(r"/(user\.css|favicon\.ico|api/userdata(/.*)?)")


def is_offline_noise(entry: dict) -> bool:
    url = entry["url"]
    if url and not url.startswith("http://127.0.0.1:"):
        return "ERR_NAME_NOT_RESOLVED" in entry["text"] or "ERR_INTERNET_DISCONNECTED" in entry["text"]
    return "status of 404" in entry["text"] and bool(OPTIONAL_FILES.fullmatch(urllib.parse.urlsplit(url).path))


PLANS = {
    "strip": {"double_blocks": "0-2, [3-6]*2, 7*3, 12-9, 15-18", "single_blocks": "0-15, (16-19)*2, 30-37"},
    "strip_error": {"double_blocks": "0-2, [3-6]*2, 19", "single_blocks": "0-4, 7 x"},
}
TYPED = "0-3, 7*2"

# model-file inputs of standard loaders (and of the pack's LoRA nodes): the workflows name files
# this test cannot ship, so it creates empty placeholders under these folders before validating
MODEL_FILE_INPUTS = {"ckpt_name": "checkpoints", "unet_name": "diffusion_models", "clip_name": "text_encoders",
                     "clip_name1": "text_encoders", "clip_name2": "text_encoders", "clip_name3": "text_encoders",
                     "vae_name": "vae", "lora_name": "loras"}


def _missing_tools() -> str | None:
    chromium = os.environ.get("LAYER_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return "no Chromium: install Debian's 'chromium' or set LAYER_LAB_CHROMIUM to a Chromium binary"
    if not shutil.which("node"):
        return "no Node.js on PATH (needed to drive the browser with playwright-core)"
    if not (ROOT / "tests" / "browser" / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run 'npm ci --prefix tests/browser'"
    return None


pytestmark = pytest.mark.skipif(_missing_tools() is not None, reason=_missing_tools() or "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = live_server.ComfyServer(COMFYUI_PATH, tmp_path_factory.mktemp("comfyui_base")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def seen(server, tmp_path_factory):
    """What one browser session saw: console, extensions, strips, typed text, loaded workflows."""
    screenshots = ROOT / "docs" if os.environ.get("LAYER_LAB_SCREENSHOTS") == "1" else None
    job = {
        "url": server.url,
        "chromium": os.environ.get("LAYER_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser"),
        "screenshots": str(screenshots) if screenshots else None,
        "plans": PLANS,
        "typing": TYPED,
        "workflows": {path.name: json.loads(path.read_text()) for path in WORKFLOWS},
    }
    job_file = tmp_path_factory.mktemp("browser") / "job.json"
    job_file.write_text(json.dumps(job))
    done = subprocess.run(["node", str(DRIVER), str(job_file)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise AssertionError(f"the browser driver failed:\n{done.stderr[-4000:]}\nserver log:\n{server.log()[-3000:]}")
    return json.loads(done.stdout)


def _rows(state):
    return {row["stream"]: row for row in state["rows"]}


def _cells(row):
    return [(cell["kind"], cell["label"]) for cell in row["cells"]]


def test_extension_loads_once_without_console_errors(seen):
    assert EXTENSION in seen["extensions"]
    ours = [name for name in seen["extension_files"] if name.endswith("/block_strip.js")]
    assert len(ours) == 1, f"the pack's script was loaded {len(ours)} times: {ours}"
    errors = [entry for entry in seen["console"] if entry["type"] in ("error", "pageerror")
              and not is_offline_noise(entry)]
    assert errors == []


def test_strip_shows_the_steps_of_a_valid_plan(seen):
    state = seen["plans"]["strip"]
    assert state["ok"] == "true"
    rows = _rows(state)
    run, par, rep, rev, skip = "run", "parallel", "repeated", "reversed", "skipped"
    assert _cells(rows["double_blocks"]) == [
        (run, "0"), (run, "1"), (run, "2"), (par, "[3-6]*2"), (rep, "7*3"),
        (rev, "12"), (rev, "11"), (rev, "10"), (rev, "9"),
        (run, "15"), (run, "16"), (run, "17"), (run, "18"),
        (skip, "8"), (skip, "13"), (skip, "14")]
    assert rows["double_blocks"]["cells"][3]["blocks"] == "3,4,5,6"
    assert _cells(rows["single_blocks"]) == (
        [(run, str(i)) for i in range(16)] + [(rep, str(i)) for i in (16, 17, 18, 19) * 2]
        + [(run, str(i)) for i in range(30, 38)] + [(skip, str(i)) for i in range(20, 30)])
    assert "Flux.1 block counts until the graph runs" in state["note"]


def test_strip_shows_the_parse_error_with_token_and_position(seen):
    state = seen["plans"]["strip_error"]
    assert state["ok"] == "false"
    rows = _rows(state)
    double, single = rows["double_blocks"]["error"], rows["single_blocks"]["error"]
    assert (double["token"], double["position"], double["marked"]) == ("19", "14", "19")
    assert "block 19 is out of range: valid double_blocks indices are 0-18 (position 15)" in double["text"]
    assert "valid only for a model with at least 20 double_blocks" in double["text"]
    assert (single["token"], single["position"], single["marked"]) == ("x", "7", "x")
    assert "unknown word 'x'" in single["text"]
    assert rows["double_blocks"]["cells"] == [] and rows["single_blocks"]["cells"] == []


def test_strip_follows_typing_before_enter(seen):
    typing = seen["typing"]
    live = _rows(typing["live"])["double_blocks"]
    assert _cells(live)[:5] == [("run", "0"), ("run", "1"), ("run", "2"), ("run", "3"), ("repeated", "7*2")]
    assert typing["committed"] == TYPED
    assert _cells(_rows(typing["after"])["double_blocks"]) == _cells(live)


def test_route_answers_over_http(server):
    texts = {"double_blocks": "0-2, 19", "single_blocks": "all"}
    for prefix in ("", "/api"):
        status, answer = server.post(prefix + "/dit_layer_lab/preview", {"node_type": "LayerLabPlan", "inputs": texts})
        assert status == 200 and answer == json.loads(json.dumps(preview_plan(texts)))
    status, answer = server.post("/dit_layer_lab/preview", {"node_type": "KSampler", "inputs": {}})
    assert status == 400 and "KSampler" in answer["error"]
    assert "LayerLabPlan" in server.get("/dit_layer_lab/preview")["nodes"]


def test_there_are_example_workflows():
    assert WORKFLOWS, "example_workflows/ has no .json file"


def test_example_workflows_are_listed_as_templates(server):
    listed = server.get("/workflow_templates").get(live_server.PACK_FOLDER, [])
    assert sorted(listed) == sorted(path.stem for path in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_loads_and_its_prompt_is_valid(seen, server, path):
    loaded = seen["workflows"][path.name]
    assert loaded["missing"] == [] and loaded["unregistered"] == []
    prompt = loaded["prompt"]
    assert any(node["class_type"].startswith("LayerLab") for node in prompt.values())
    blocks_nodes = {"LayerLabPlan", "LayerLabSkip", "LayerLabRepeat", "LayerLabReverse", "LayerLabParallel",
                    "LayerLabShuffle", "LayerLabLoraBlocks", "LayerLabLoraBlocksSave"}
    used = {node["class_type"] for node in prompt.values()} & blocks_nodes
    assert used <= set(loaded["strips"])
    for node in prompt.values():  # placeholders for the model files the workflow names
        for name, value in node["inputs"].items():
            if name in MODEL_FILE_INPUTS and isinstance(value, str):
                placeholder = server.base / "models" / MODEL_FILE_INPUTS[name] / value
                placeholder.parent.mkdir(parents=True, exist_ok=True)
                placeholder.touch()
    status, answer = server.post("/prompt", {"prompt": prompt, "client_id": "layer-lab-test"})
    assert status == 200, json.dumps(answer, indent=1)[:4000]
    assert answer.get("node_errors") == {}
    server.post("/queue", {"clear": True})
    server.post("/interrupt", {})
