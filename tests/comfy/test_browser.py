"""The pack in ComfyUI's real web UI: the real server on loopback, headless Chromium driven by Playwright.

Needs, besides ``COMFYUI_PATH`` (see conftest.py): ComfyUI's server requirements, a Chromium
(``chromium`` on PATH, or ``LAYER_LAB_CHROMIUM``), Node.js and ``npm ci --prefix tests/browser``
(playwright-core only; it never downloads a browser). Without them these tests skip with the reason.

One browser session (tests/browser/drive.mjs) does everything and reports what it saw; the tests
below check that report. With ``LAYER_LAB_SCREENSHOTS=1`` it also writes docs/strip.png,
docs/strip_error.png, docs/strip_grid.png and docs/probe_node.png.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import urllib.parse

import pytest
from PIL import Image

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
GRID_PLANS = """\
# label: double_blocks=<plan>; single_blocks=<plan>
skip middle double: double_blocks=0-2, 17-18
reverse middle single: single_blocks=0-3, 33-4, 34-37

looped parallel x3: double_blocks=0-2, [3-15]*3, 16-18; single_blocks=all
too far: single_blocks=0-3, 40
"""
# The probe's heatmap as the probe node made it (see the README); the probe test delivers it to a node.
PROBE_IMAGE = ROOT / "docs" / "probe_heatmap.png"
PROBE_FILENAME = "layer_lab_probe_heatmap.png"

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
    """What one browser session saw: console, extensions, strips, typed text, the probe's image, workflows."""
    screenshots = ROOT / "docs" if os.environ.get("LAYER_LAB_SCREENSHOTS") == "1" else None
    # No model can run on this server (no checkpoint its loaders detect, no text encoder), so the probe's
    # output is not produced here: the image the probe node made earlier goes into the server's temp
    # folder, where a run's preview would be, and the browser delivers it to the node through the
    # frontend's own path for a run's output (the `executed` event). tests/comfy/test_node_ui.py checks
    # that the node's preview is its IMAGE output.
    temp = server.base / "temp"
    temp.mkdir(exist_ok=True)
    shutil.copyfile(PROBE_IMAGE, temp / PROBE_FILENAME)
    job = {
        "url": server.url,
        "chromium": os.environ.get("LAYER_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser"),
        "screenshots": str(screenshots) if screenshots else None,
        "plans": PLANS,
        "typing": TYPED,
        "grid": {"plans": GRID_PLANS},
        "probe": {"filename": PROBE_FILENAME},
        "workflows": {path.name: json.loads(path.read_text()) for path in WORKFLOWS},
    }
    job_file = tmp_path_factory.mktemp("browser") / "job.json"
    job_file.write_text(json.dumps(job))
    # its own process group, so that a timeout also ends the Chromium it started
    driver = subprocess.Popen(["node", str(DRIVER), str(job_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        stdout, stderr = driver.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.communicate()
        raise AssertionError(f"the browser driver did not finish in 600 s\nserver log:\n{server.log()[-3000:]}")
    if driver.returncode != 0:
        raise AssertionError(f"the browser driver failed:\n{stderr[-4000:]}\nserver log:\n{server.log()[-3000:]}")
    return json.loads(stdout)


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


def test_grid_strip_draws_each_plan_line(seen):
    state = seen["grid"]
    assert state["ok"] == "false"  # one line is invalid
    lines = {line["number"]: line for line in state["lines"]}
    assert sorted(lines, key=int) == ["2", "3", "5", "6"]  # the comment and the blank line have no group
    assert [lines[n]["ok"] for n in ("2", "3", "5", "6")] == ["true", "true", "true", "false"]
    assert lines["2"]["label"] == "line 2 skip middle double" and lines["2"]["error"] is None
    rows = {(row["line"], row["stream"]): row for row in state["rows"] if row["line"]}
    assert _cells(rows["2", "double_blocks"]) == (
        [("run", "0"), ("run", "1"), ("run", "2"), ("run", "17"), ("run", "18")]
        + [("skipped", str(i)) for i in range(3, 17)])
    # a stream the line leaves out runs in the original order: one word, no cells
    assert rows["2", "single_blocks"]["cells"] == [] and rows["2", "single_blocks"]["note"] == "original order"
    assert _cells(rows["3", "single_blocks"]) == ([("run", str(i)) for i in range(4)]
                                                 + [("reversed", str(i)) for i in range(33, 3, -1)]
                                                 + [("run", str(i)) for i in range(34, 38)])
    assert _cells(rows["5", "double_blocks"])[3] == ("parallel", "[3-15]*3")
    assert rows["5", "single_blocks"]["note"] == "original order"  # 'all' typed: the original order too


def test_grid_strip_shows_the_invalid_line_at_its_line_and_column(seen):
    (line,) = [line for line in seen["grid"]["lines"] if line["ok"] == "false"]
    text = GRID_PLANS.splitlines()[5]
    column = text.index("40") + 1
    error = line["error"]
    assert (line["number"], error["token"], error["marked"]) == ("6", "40", "40")
    assert error["position"] == str(column - 1)
    assert error["text"].startswith(text + "\n")
    assert f"line 6:{column} block 40 is out of range: valid single_blocks indices are 0-37" in error["text"]
    assert not any(row["line"] == "6" for row in seen["grid"]["rows"])


def test_probe_node_shows_the_image_of_an_executed_event(seen):
    probe = seen["probe"]
    with Image.open(PROBE_IMAGE) as image:
        assert (probe["width"], probe["height"]) == image.size
    assert f"filename={PROBE_FILENAME}" in probe["src"] and "type=temp" in probe["src"]
    assert {"filename": PROBE_FILENAME, "type": "temp", "status": 200} in probe["views"]


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
