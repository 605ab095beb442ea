"""The pack in ComfyUI's real web UI: the real server on loopback, headless Chromium driven by Playwright.

Needs, besides ``COMFYUI_PATH`` (see conftest.py): ComfyUI's server requirements, a Chromium
(``chromium`` on PATH, or ``LAYER_LAB_CHROMIUM``), Node.js and ``npm ci --prefix tests/browser``
(playwright-core only; it never downloads a browser); scripts/setup_comfyui_tests.sh installs them.
Without them these tests skip with the reason.

The tests run a matrix: the frontend the ComfyUI under test pins, and every frontend of
tests/browser/frontends.txt (installed under ``.frontends/<version>``; one that is not installed skips
its cells and says so), each in both node renderers, classic and "Nodes 2.0". One server per frontend
for the session (conftest.py), one browser page per cell (tests/browser/drive.mjs): each test asks the
page for the part it checks, and the parts run once each, in order. With ``LAYER_LAB_SCREENSHOTS=1``
the cells of the newest installed frontend also write docs/strip.png, docs/strip_error.png,
docs/strip_grid.png and docs/probe_node.png (classic) and the same names ending in ``_nodes2`` (Nodes 2.0).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse

import pytest
from PIL import Image

from dit_layer_lab.server_routes import NODES as STRIP_NODES
from dit_layer_lab.tests.comfy import live_server, real_headers

ROOT = live_server.ROOT
COMFYUI_PATH = pathlib.Path(os.environ.get("COMFYUI_PATH", ".")).expanduser().resolve()  # conftest checked it
DRIVER = ROOT / "tests" / "browser" / "drive.mjs"
WORKFLOWS = sorted((ROOT / "example_workflows").glob("*.json"))
EXTENSION = "dit_layer_lab.block_strip"
FRONTENDS = live_server.frontends()
RENDERERS = ("classic", "nodes2")  # nodes2: "Modern Node Design (Nodes 2.0)", setting Comfy.VueNodes.Enabled

# What the UI logs on a machine without internet access, none of it about this pack: look-ups of
# outside hosts, and 404s for the user's optional files.
# The node docs panel asks for a page in the user's language first (docs/<node>/<locale>.md), then docs/<node>.md.
OPTIONAL_FILES = re.compile(r"/(user\.css|favicon\.ico|api/userdata(/.*)?|extensions/[^/]+/docs/\w+/[\w-]+\.md)")
# Logged by frontend 1.49.6 itself while it starts (a computed setting reads app.rootGraph before the
# graph exists): seen with every custom node disabled, and only the frontend's files are on its stack.
FRONTEND_NOISE = {"ComfyApp graph accessed before initialization"}
PACK_SCRIPTS = f"/extensions/{live_server.PACK_FOLDER}/"


def is_offline_noise(entry: dict) -> bool:
    url = entry["url"]
    if url and not url.startswith("http://127.0.0.1:"):
        return "ERR_NAME_NOT_RESOLVED" in entry["text"] or "ERR_INTERNET_DISCONNECTED" in entry["text"]
    return "status of 404" in entry["text"] and bool(OPTIONAL_FILES.fullmatch(urllib.parse.urlsplit(url).path))


def is_the_pack_s(entry: dict) -> bool:
    """Logged by the pack's script, or by anything it called (its file is on the stack), or about it."""
    return (any(PACK_SCRIPTS in url for url in [entry["url"], *entry["stack"]])
            or "layer lab" in entry["text"].lower() or "dit_layer_lab" in entry["text"])


def is_frontend_noise(entry: dict) -> bool:
    return (entry["text"] in FRONTEND_NOISE and bool(entry["stack"]) and not is_the_pack_s(entry)
            and all("/assets/" in url for url in entry["stack"] if url))


def knows_cancelled_jobs(server) -> bool:
    """Frontends from 1.49 list jobs by status 'cancelled', which ComfyUI v0.8.0's /api/jobs refuses (400)."""
    try:
        server.get("/api/jobs?status=cancelled&limit=1")
        return True
    except urllib.error.HTTPError as error:
        if error.code == 400 and "cancelled" in error.read().decode(errors="replace"):
            return False
        raise


def is_jobs_mismatch(entry: dict) -> bool:
    """The frontend's request for cancelled jobs and its own report of the 400 (on a server without them)."""
    url = urllib.parse.urlsplit(entry["url"])
    if url.path == "/api/jobs":
        status = urllib.parse.parse_qs(url.query).get("status", [""])[0].split(",")
        return "status of 400" in entry["text"] and "cancelled" in status
    return (entry["text"].startswith("[Jobs API] ") and "Failed to fetch jobs: 400" in entry["text"]
            and not is_the_pack_s(entry) and all("/assets/" in url for url in entry["stack"] if url))


# Typed into a Plan node in turn: valid, invalid, valid again; then, after switching the renderer
# with the node on the canvas (and again after switching back), invalid and valid.
PLANS = [
    ("strip", {"double_blocks": "0-2, [3-6]*2, 7*3, 12-9, 15-18", "single_blocks": "0-15, (16-19)*2, 30-37"}),
    ("strip_error", {"double_blocks": "0-2, [3-6]*2, 19", "single_blocks": "0-4, 7 x"}),
    ("again", {"double_blocks": "0-3, 7*2", "single_blocks": "all"}),
]
# Then set on the node's widgets by code, with no event: a text the route refuses, then a valid plan.
SET_BY_CODE = [
    ("refused", {"double_blocks": "1," * 5001, "single_blocks": "all"}),
    ("valid", {"double_blocks": "0-3, 7*2", "single_blocks": "all"}),
]
SWITCHED = [
    ("error", {"double_blocks": "2-4, 99", "single_blocks": "all"}),
    ("valid", {"double_blocks": "18-0", "single_blocks": "none"}),
]
LORA = [
    ("valid", {"double_blocks": "7-12", "single_blocks": "none"}),
    ("invalid", {"double_blocks": "7-12, 7", "single_blocks": "none"}),
    ("again", {"double_blocks": "0, 18", "single_blocks": "30-37"}),
]
GRID_PLANS = """\
# label: double_blocks=<plan>; single_blocks=<plan>
skip middle double: double_blocks=0-2, 17-18
reverse middle single: single_blocks=0-3, 33-4, 34-37

looped parallel x3: double_blocks=0-2, [3-15]*3, 16-18; single_blocks=all
too far: single_blocks=0-3, 40
"""
GRID_TOO_MANY = "".join(f"line {i}: double_blocks={i % 19}\n" for i in range(65))  # more lines than previewed
GRID_VALID = "only double: double_blocks=0-2, 17-18\n"
# Images the nodes made (see docs/probe.md, docs/plan-grid.md, docs/importance-sweep.md), delivered to each node the way ComfyUI delivers a run's output.
IMAGES = {"LayerLabSimilarityProbe": ROOT / "docs" / "probe_heatmap.png",
          "LayerLabPlanGrid": ROOT / "docs" / "plan_grid.png",
          "LayerLabImportanceSweep": ROOT / "docs" / "importance_sweep.png"}

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


def _installed(version: str) -> bool:
    try:
        live_server.frontend_root(version)
        return True
    except LookupError:
        return False


SCREENSHOT_FRONTEND = next((v for v, _ in reversed(FRONTENDS) if _installed(v)), None)


def serving(servers, version: str) -> live_server.ComfyServer:
    """The session's server of this frontend, with the images the nodes show after a run in its temp folder."""
    try:
        server = servers.serving(version)
    except LookupError as missing:
        pytest.skip(f"{missing} ({dict(FRONTENDS)[version]})")
    real_headers.write_example_files(server.base / "models")  # the example workflows' model files, headers only
    temp = server.base / "temp"  # where a run's previews would be
    temp.mkdir(exist_ok=True)
    for node_type, image in IMAGES.items():
        shutil.copyfile(image, temp / f"layer_lab_{node_type}.png")
    return server


CELLS = [(version, renderer) for version, _ in FRONTENDS for renderer in RENDERERS]


@pytest.fixture(scope="module", params=CELLS, ids=lambda cell: f"{cell[0]}-{cell[1]}")
def cell(request):
    return request.param


class Page:
    """One browser page of one cell (tests/browser/drive.mjs), open while the cell's tests run their parts
    in it, in PARTS order: a part asked for runs, once, after the parts before it."""

    PARTS = ("plans", "set_by_code", "switched", "lora", "grid", "images", "workflows", "model_source", "model_paths",
             "docs", "console")

    def __init__(self, server, renderer: str):
        self.server, self.cell = server, (server.frontend, renderer)
        self.seen: dict = {}
        screenshots = None
        if os.environ.get("LAYER_LAB_SCREENSHOTS") == "1" and server.frontend == SCREENSHOT_FRONTEND:
            screenshots = {"folder": str(ROOT / "docs"), "suffix": "" if renderer == "classic" else "_nodes2"}
        # its own process group, so that ending it also ends the Chromium it started
        self.driver = subprocess.Popen(["node", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.opened = self.send("open", url=server.url, renderer=renderer, screenshots=screenshots,
                                chromium=CHROMIUM)

    def send(self, part: str, timeout: float = 120, **command):
        self.driver.stdin.write(json.dumps({"part": part, **command}) + "\n")
        self.driver.stdin.flush()
        answer = _read_line(self.driver, timeout)
        if answer is None:
            self.kill()
            raise AssertionError(f"the browser driver gave no answer to {part!r} in {timeout} s:\n"
                                 f"{self.driver.stderr.read()[-4000:]}\nserver log:\n{self.server.log()[-3000:]}")
        answer = json.loads(answer)
        if not answer["ok"]:
            raise AssertionError(f"the browser driver failed in {part!r}:\n{answer['error']}\n"
                                 f"server log:\n{self.server.log()[-3000:]}")
        return answer["result"]

    def part(self, name: str):
        for earlier in self.PARTS[:self.PARTS.index(name) + 1]:
            if earlier not in self.seen:
                self.seen[earlier] = self.send(earlier, **JOB[earlier])
        return self.seen[name]

    def close(self):
        try:
            self.send("close", timeout=30)
            self.driver.stdin.close()
            self.driver.wait(timeout=10)
        except Exception:
            self.kill()

    def kill(self):
        if self.driver.poll() is None:
            os.killpg(self.driver.pid, signal.SIGKILL)
            self.driver.wait()


def _read_line(process, timeout: float) -> str | None:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline() if ready else None


DOCS_NODE = "LayerLabPlan"


def _first_plain_words(markdown: str) -> str:
    """Words of the page's first paragraph that markdown renders as they are, to look for on screen."""
    for line in markdown.splitlines():
        if line and line[0].isalpha():
            return line.split("`")[0].split("*")[0].split("[")[0].strip()[:40]
    raise AssertionError("the page has no paragraph")


DOCS_TEXT = _first_plain_words((ROOT / "js" / "docs" / f"{DOCS_NODE}.md").read_text())
# Before any run: the Wan 2.2 workflow's loader file, written with a real header (a 30-block Wan model),
# and a Plan node with no model
SOURCE_WORKFLOW = "wan22_skip_grid"
SOURCE_FILE = "wan2.2_ti2v_5B_fp16.safetensors"
OTHER_FILE = "flux1-dev.safetensors"  # another file serving() writes, of another model
LONE_PLAN = {"double_blocks": "0-2, 7", "single_blocks": "all"}
CHROMIUM = os.environ.get("LAYER_LAB_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# What each part does in the page (see drive.mjs)
JOB = {
    "plans": {"plans": [{"name": name, "inputs": inputs} for name, inputs in PLANS]},
    "set_by_code": {"set_by_code": [{"name": name, "inputs": inputs} for name, inputs in SET_BY_CODE]},
    "switched": {"switched": [{"name": name, "inputs": inputs} for name, inputs in SWITCHED]},
    "lora": {"lora": [{"name": name, "inputs": inputs} for name, inputs in LORA]},
    "grid": {"grid": [{"name": "strip_grid", "plans": GRID_PLANS}, {"name": "too_many", "plans": GRID_TOO_MANY},
                      {"name": "valid", "plans": GRID_VALID}]},
    "images": {"images": {node_type: f"layer_lab_{node_type}.png" for node_type in IMAGES}},
    "model_source": {"workflow": json.loads((ROOT / "example_workflows" / f"{SOURCE_WORKFLOW}.json").read_text()),
                     "grid_type": "LayerLabPlanGrid", "lone": {"inputs": LONE_PLAN}},
    "model_paths": {"workflow": json.loads((ROOT / "example_workflows" / f"{SOURCE_WORKFLOW}.json").read_text()),
                    "grid_type": "LayerLabPlanGrid", "files": {"workflow": SOURCE_FILE, "other": OTHER_FILE}},
    "docs": {"node": DOCS_NODE, "text": DOCS_TEXT},
    "workflows": {"workflows": {path.name: json.loads(path.read_text()) for path in WORKFLOWS}},
    "console": {},
}


@pytest.fixture(scope="module")
def page(servers, cell):
    """The cell's page: its frontend's server, its renderer."""
    opened = Page(serving(servers, cell[0]), cell[1])
    try:
        yield opened
    finally:
        opened.close()


def _rows(state):
    return {row["stream"]: row for row in state["rows"]}


def _cells(row):
    return [(cell["kind"], cell["label"]) for cell in row["cells"]]


def _current(state, inputs):
    """The strip shows the answer for exactly these inputs, committed, and it is on its node."""
    assert not state["timed_out"], f"the strip never showed {inputs}; it shows the answer for {state['sent']}"
    assert state["sent"] == {**state["sent"], **inputs}
    assert state["committed"] == inputs
    _on_its_node(state)


def _on_its_node(state):
    assert state["shown"], "the strip is not visible"
    strip, node = state["rect"], state["node_rect"]
    assert node["x"] - 2 <= strip["x"] and strip["x"] + strip["width"] <= node["x"] + node["width"] + 2
    assert node["y"] - 2 <= strip["y"] and strip["y"] + strip["height"] <= node["y"] + node["height"] + 2


RUN, PAR, REP, REV, SKIP = "run", "parallel", "repeated", "reversed", "skipped"


def test_the_cell_runs_its_renderer_and_loads_the_extension_once(page):
    opened = page.opened
    assert opened["renderer"] == page.cell[1]
    assert EXTENSION in opened["extensions"]
    ours = [name for name in opened["extension_files"] if name.endswith("/block_strip.js")]
    assert len(ours) == 1, f"the pack's script was loaded {len(ours)} times: {ours}"


def test_strip_shows_the_steps_of_a_valid_plan(page):
    state = page.part("plans")["strip"]
    _current(state, dict(PLANS)["strip"])
    assert state["ok"] == "true"
    rows = _rows(state)
    assert _cells(rows["double_blocks"]) == [
        (RUN, "0"), (RUN, "1"), (RUN, "2"), (PAR, "[3-6]*2"), (REP, "7*3"),
        (REV, "12"), (REV, "11"), (REV, "10"), (REV, "9"),
        (RUN, "15"), (RUN, "16"), (RUN, "17"), (RUN, "18"),
        (SKIP, "8"), (SKIP, "13"), (SKIP, "14")]
    assert rows["double_blocks"]["cells"][3]["blocks"] == "3,4,5,6"
    assert _cells(rows["single_blocks"]) == (
        [(RUN, str(i)) for i in range(16)] + [(REP, str(i)) for i in (16, 17, 18, 19) * 2]
        + [(RUN, str(i)) for i in range(30, 38)] + [(SKIP, str(i)) for i in range(20, 30)])
    assert "Flux model" in state["note"]  # the Flux.1 run drive.mjs reports to the node


def test_strip_shows_the_parse_error_with_token_and_position(page):
    state = page.part("plans")["strip_error"]
    _current(state, dict(PLANS)["strip_error"])
    assert state["ok"] == "false"
    rows = _rows(state)
    double, single = rows["double_blocks"]["error"], rows["single_blocks"]["error"]
    assert (double["token"], double["position"], double["marked"]) == ("19", "14", "19")
    assert "block 19 is out of range: valid double_blocks indices are 0-18 (position 15)" in double["text"]
    assert "valid only for a model with at least 20 double_blocks" in double["text"]
    assert (single["token"], single["position"], single["marked"]) == ("x", "7", "x")
    assert "unknown word 'x'" in single["text"]
    assert rows["double_blocks"]["cells"] == [] and rows["single_blocks"]["cells"] == []


AGAIN_DOUBLE = [(RUN, "0"), (RUN, "1"), (RUN, "2"), (RUN, "3"), (REP, "7*2")] + [
    (SKIP, str(i)) for i in (4, 5, 6, *range(8, 19))]


def test_strip_follows_typing_back_to_a_valid_plan(page):
    state = page.part("plans")["again"]
    _current(state, dict(PLANS)["again"])
    assert state["ok"] == "true" and not any(row["error"] for row in state["rows"])
    rows = _rows(state)
    assert _cells(rows["double_blocks"]) == AGAIN_DOUBLE
    assert _cells(rows["single_blocks"]) == [(RUN, str(i)) for i in range(38)]


def test_strip_follows_each_keystroke_before_the_edit_is_committed(page):
    # in the classic renderer the edit box is open; in Nodes 2.0 the text box has not lost focus yet
    live = page.part("plans")["again"]["live"]["double_blocks"]
    assert not live["timed_out"] and live["sent"]["double_blocks"] == "0-3, 7*2"
    assert _cells(_rows(live)["double_blocks"]) == AGAIN_DOUBLE
    error = _rows(page.part("plans")["strip_error"]["live"]["double_blocks"])["double_blocks"]["error"]
    assert error["marked"] == "19"


def test_strip_follows_values_set_without_an_event_and_shows_a_refusal(page):
    refused, valid = (page.part("set_by_code")[name] for name, _ in SET_BY_CODE)
    assert not refused["timed_out"] and refused["sent"] == dict(SET_BY_CODE)["refused"]
    _on_its_node(refused)
    assert refused["ok"] == "false" and refused["rows"] == []
    assert refused["refused"] == ("not previewed: input 'double_blocks' is 10002 characters long; "
                                  "the preview reads at most 10000")
    assert not valid["timed_out"] and valid["sent"] == dict(SET_BY_CODE)["valid"]
    assert valid["ok"] == "true" and valid["refused"] is None
    assert _cells(_rows(valid)["double_blocks"]) == AGAIN_DOUBLE


@pytest.mark.parametrize("renderer", RENDERERS, ids=lambda r: f"then-{r}")
def test_strip_follows_typing_after_the_renderer_is_switched(page, renderer):
    # the node was on the canvas while the renderer changed: first to the other one, then back
    error = page.part("switched")[f"{renderer}:error"]
    _current(error, dict(SWITCHED)["error"])
    rows = _rows(error)
    assert error["ok"] == "false" and rows["double_blocks"]["cells"] == []
    assert (rows["double_blocks"]["error"]["token"], rows["double_blocks"]["error"]["position"]) == ("99", "5")
    assert "block 99 is out of range" in rows["double_blocks"]["error"]["text"]
    assert _cells(rows["single_blocks"]) == [(RUN, str(i)) for i in range(38)]
    valid = page.part("switched")[f"{renderer}:valid"]
    _current(valid, dict(SWITCHED)["valid"])
    rows = _rows(valid)
    assert valid["ok"] == "true" and not any(row["error"] for row in valid["rows"])
    assert _cells(rows["double_blocks"]) == [(REV, str(i)) for i in range(18, -1, -1)]
    assert _cells(rows["single_blocks"]) == [(SKIP, str(i)) for i in range(38)]
    assert valid["in_node_element"] == (renderer == "nodes2")


def test_lora_strip_shows_the_selected_blocks(page):
    def selected(row):
        return [int(cell["label"]) for cell in row["cells"] if cell["kind"] == "selected"]

    valid, invalid, again = (page.part("lora")[name] for name, _ in LORA)
    for state, (_, inputs) in zip((valid, invalid, again), LORA):
        _current(state, inputs)
    rows = _rows(valid)
    assert selected(rows["double_blocks"]) == list(range(7, 13)) and len(rows["double_blocks"]["cells"]) == 19
    assert selected(rows["single_blocks"]) == [] and len(rows["single_blocks"]["cells"]) == 38
    error = _rows(invalid)["double_blocks"]["error"]
    assert invalid["ok"] == "false" and (error["token"], error["position"], error["marked"]) == ("7", "6", "7")
    assert "block 7 is selected twice" in error["text"]
    rows = _rows(again)
    assert again["ok"] == "true"
    assert selected(rows["double_blocks"]) == [0, 18] and selected(rows["single_blocks"]) == list(range(30, 38))


def test_grid_strip_draws_each_plan_line(page):
    state = page.part("grid")["strip_grid"]
    assert not state["timed_out"] and state["sent"] == {"plans": GRID_PLANS}
    _on_its_node(state)
    assert state["ok"] == "false"  # one line is invalid
    lines = {line["number"]: line for line in state["lines"]}
    assert sorted(lines, key=int) == ["2", "3", "5", "6"]  # the comment and the blank line have no group
    assert [lines[n]["ok"] for n in ("2", "3", "5", "6")] == ["true", "true", "true", "false"]
    assert lines["2"]["label"] == "line 2 skip middle double" and lines["2"]["error"] is None
    rows = {(row["line"], row["stream"]): row for row in state["rows"] if row["line"]}
    assert _cells(rows["2", "double_blocks"]) == (
        [(RUN, "0"), (RUN, "1"), (RUN, "2"), (RUN, "17"), (RUN, "18")] + [(SKIP, str(i)) for i in range(3, 17)])
    # a stream the line leaves out runs in the original order: one word, no cells
    assert rows["2", "single_blocks"]["cells"] == [] and rows["2", "single_blocks"]["note"] == "original order"
    assert _cells(rows["3", "single_blocks"]) == ([(RUN, str(i)) for i in range(4)]
                                                 + [(REV, str(i)) for i in range(33, 3, -1)]
                                                 + [(RUN, str(i)) for i in range(34, 38)])
    assert _cells(rows["5", "double_blocks"])[3] == (PAR, "[3-15]*3")
    assert rows["5", "single_blocks"]["note"] == "original order"  # 'all' typed: the original order too


def test_grid_strip_shows_the_invalid_line_at_its_line_and_column(page):
    state = page.part("grid")["strip_grid"]
    (line,) = [line for line in state["lines"] if line["ok"] == "false"]
    text = GRID_PLANS.splitlines()[5]
    column = text.index("40") + 1
    error = line["error"]
    assert (line["number"], error["token"], error["marked"]) == ("6", "40", "40")
    assert error["position"] == str(column - 1)
    assert error["text"].startswith(text + "\n")
    assert f"line 6:{column} block 40 is out of range: valid single_blocks indices are 0-37" in error["text"]
    assert not any(row["line"] == "6" for row in state["rows"])


def test_grid_strip_says_why_it_shows_no_line_beyond_the_limit(page):
    state = page.part("grid")["too_many"]
    assert not state["timed_out"] and state["sent"] == {"plans": GRID_TOO_MANY}
    _on_its_node(state)
    assert state["ok"] == "false" and state["lines"] == [] and state["rows"] == []
    assert state["refused"] == "not previewed: plans has 65 plan lines; the preview checks at most 64"


def test_grid_strip_follows_the_text_to_a_valid_one(page):
    state = page.part("grid")["valid"]
    assert not state["timed_out"] and state["sent"] == {"plans": GRID_VALID}
    _on_its_node(state)
    assert state["ok"] == "true" and [line["number"] for line in state["lines"]] == ["1"]
    rows = _rows(state)
    assert _cells(rows["double_blocks"])[:5] == [(RUN, "0"), (RUN, "1"), (RUN, "2"), (RUN, "17"), (RUN, "18")]


@pytest.mark.parametrize("node_type", IMAGES)
def test_node_shows_its_image_after_a_run(page, node_type):
    images = page.part("images")
    shown = images["shown"][node_type]
    assert shown is not None, f"{node_type} shows no image after the executed event"
    filename = f"layer_lab_{node_type}.png"
    with Image.open(IMAGES[node_type]) as image:
        assert (shown["width"], shown["height"]) == image.size
    assert f"filename={filename}" in shown["src"] and "type=temp" in shown["src"]
    assert {"filename": filename, "type": "temp", "status": 200} in images["views"]
    if page.cell[1] == "nodes2":  # an <img> inside the node; the classic canvas draws node.imgs
        assert shown["in_node_element"]
        image, node = shown["rect"], shown["node_rect"]
        assert image["width"] > 100 and node["x"] <= image["x"] <= node["x"] + node["width"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_example_workflow_loads_and_its_prompt_is_valid(page, path):
    server = page.server
    loaded = page.part("workflows")[path.name]
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


def _draws_a_strip(path: pathlib.Path) -> bool:
    return any(node["type"] in STRIP_NODES for node in json.loads(path.read_text())["nodes"])


@pytest.mark.parametrize("path", [path for path in WORKFLOWS if _draws_a_strip(path)], ids=lambda path: path.stem)
def test_example_workflow_shows_its_model_s_lists_before_a_run(page, path):
    """Opened as a new user opens it, with the model files it names present (their real headers), every strip
    shows the lists of the model its loader reads: the family, the counts, the file named; nothing invented."""
    shown = page.part("workflows")[path.name]["shown"]
    files = {node["widgets_values"][0] for node in json.loads(path.read_text())["nodes"]
             if node["type"] in ("UNETLoader", "CheckpointLoaderSimple")}
    assert len(shown) == sum(node["type"] in STRIP_NODES for node in json.loads(path.read_text())["nodes"])
    assert len(files) == 1
    name = files.pop()
    real = real_headers.EXAMPLE_FILES[name]
    for strip in shown:
        assert not strip["timed_out"], strip
        model = strip["model"]
        assert "counts_unknown" not in model, strip
        assert (model["family"], model["counts"]) == (real.family, real.counts), strip
        assert f"(read from {name}; the run's own counts replace these)" in strip["note"], strip
        for row in strip["rows"]:  # a list the model lacks is said so, with no cells
            if not real.counts[row["stream"]]:
                assert row["cells"] == 0 and row["note"] == "this model has no such blocks", strip


def test_strip_shows_the_loaded_file_s_model_before_a_run_and_unknown_counts_without_one(page):
    # the file the workflow's UNETLoader names holds Wan 2.2 TI2V 5B's header (30 blocks): serving() wrote it
    seen = page.part("model_source")
    loaded, alone = seen["loaded"], seen["alone"]
    assert not loaded["timed_out"], loaded["note"]
    # UNETLoader -> ModelSamplingSD3 -> Plan Grid: the grid's strip knows the model from the file
    assert f"Wan model (read from {SOURCE_FILE}; the run's own counts replace these)" in loaded["note"]
    assert loaded["ok"] == "true" and [line["ok"] for line in loaded["lines"]] == ["true"] * 4
    # line 2 (after the workflow's comment line): skip 12-17
    skip = [row for row in loaded["rows"] if row["line"] == "2" and row["stream"] == "single_blocks"][0]
    assert [c["label"] for c in skip["cells"] if c["kind"] == "skipped"] == [str(i) for i in range(12, 18)]
    assert [c["label"] for c in skip["cells"] if c["kind"] == "run"] == [str(i) for i in [*range(12), *range(18, 30)]]
    # no model upstream: no counts are assumed; explicit blocks are drawn, 'all' is not
    _on_its_node(alone)
    assert "block counts unknown until the graph runs" in alone["note"]
    rows = _rows(alone)
    assert _cells(rows["double_blocks"]) == [(RUN, "0"), (RUN, "1"), (RUN, "2"), (RUN, "7")]
    assert rows["single_blocks"]["cells"] == [] and "drawn once the block counts are known" in rows["single_blocks"]["note"]


@pytest.mark.parametrize("path, file", [("from_a_subgraph", OTHER_FILE), ("inside_a_subgraph", SOURCE_FILE),
                                        ("two_inputs", SOURCE_FILE), ("first_disconnected", OTHER_FILE)])
def test_the_strip_traces_its_model_through_subgraphs_and_the_first_connected_model_input(page, path, file):
    """The loader inside a subgraph that feeds the node; the node inside a subgraph fed from outside; a node
    with two MODEL inputs (ModelMergeSimple): its first connected one. Each step names another file."""
    shown = page.part("model_paths")[path]
    real = real_headers.EXAMPLE_FILES[file]
    assert not shown["timed_out"], shown
    assert (shown["model"].get("family"), shown["model"].get("counts")) == (real.family, real.counts), shown
    assert f"(read from {file}; the run's own counts replace these)" in shown["note"]


def test_the_node_docs_panel_shows_the_node_s_page(page):
    seen = page.part("docs")
    assert {"url": f"{page.server.url}/extensions/{live_server.PACK_FOLDER}/docs/{DOCS_NODE}.md", "status": 200} \
        in seen["docs"], seen["docs"]
    assert seen["shown"], f"the docs panel never showed {DOCS_TEXT!r}"


def test_no_console_error_and_nothing_logged_by_the_pack(page):
    logged = page.part("console")["entries"]  # after every other part ran in the page
    mismatch = not knows_cancelled_jobs(page.server)
    errors = [entry for entry in logged if entry["type"] in ("error", "pageerror")
              and not is_offline_noise(entry) and not is_frontend_noise(entry)
              and not (mismatch and is_jobs_mismatch(entry))]
    assert errors == []
    assert [entry for entry in logged if is_the_pack_s(entry) and not is_offline_noise(entry)] == []
