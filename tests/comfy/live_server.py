"""Start the real ComfyUI server (``python main.py``) with this pack installed, for browser tests.

Everything the server writes goes to a temporary base directory: ``custom_nodes`` holds a
symlink to this repository, ``user/default/comfy.settings.json`` skips the first-visit template
browser, and the database is in memory. When torchvision or torchaudio cannot be imported here,
stand-in packages are put first on the server's ``PYTHONPATH``: importable (every name resolves),
and any call raises an error that names the stand-in.

The server can serve any frontend package with ``--front-end-root``. The frontends the browser tests
run are listed in tests/browser/frontends.txt; scripts/setup_comfyui_tests.sh installs each one
under ``.frontends/<version>`` in this repository.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACK_FOLDER = "dit-layer-lab-under-test"  # not the project name, so a web folder declared twice shows up

STAND_IN = '''"""Test stand-in for {package}: the real package cannot be imported in this environment."""


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{{self._name}}.{{attr}}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{{self._name}} is unavailable: {package} is a test stand-in")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return _Unavailable(f"{{__name__}}.{{name}}")
'''

# submodules ComfyUI imports by name (0.33: ops for SAM3, models.optical_flow for its VOID nodes)
STAND_INS = {"torchvision": ("transforms", "transforms/functional", "ops", "io", "utils", "models",
                             "models/optical_flow"),
             "torchaudio": ("functional", "transforms", "compliance", "compliance/kaldi")}


FRONTENDS_LIST = ROOT / "tests" / "browser" / "frontends.txt"
FRONTENDS_DIR = ROOT / ".frontends"


def frontends() -> list[tuple[str, str]]:
    """The frontend versions of the browser matrix and why each is there: the one the ComfyUI under test
    pins (installed with its requirements), then those of tests/browser/frontends.txt."""
    rows = []
    try:
        rows.append((importlib.metadata.version("comfyui-frontend-package"), "pinned by the ComfyUI under test"))
    except importlib.metadata.PackageNotFoundError:
        pass
    for line in FRONTENDS_LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            version, _, why = line.partition(" ")
            if version not in dict(rows):
                rows.append((version, why.strip()))
    return rows


def frontend_root(version: str) -> pathlib.Path | None:
    """The static folder to serve for ``version``: ``.frontends/<version>``, or None when ComfyUI's own
    installed frontend package is that version (it needs no --front-end-root); raises LookupError when
    that frontend is not installed."""
    static = FRONTENDS_DIR / version / "comfyui_frontend_package" / "static"
    if (static / "index.html").is_file():
        return static
    try:
        installed = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed == version:
        return None
    raise LookupError(f"frontend {version} is not installed (ComfyUI's own is {installed}): run "
                      f"'bash scripts/setup_comfyui_tests.sh <ComfyUI>', which puts it under .frontends/{version}")


def importable(package: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {package}"], capture_output=True).returncode == 0


def write_stand_ins(folder: pathlib.Path) -> list[str]:
    """Stand-ins for the packages that cannot be imported; returns their names."""
    written = []
    for package, submodules in STAND_INS.items():
        if importable(package):
            continue
        for sub in ("", *submodules):
            directory = folder / package / sub
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "__init__.py").write_text(STAND_IN.format(package=package))
        written.append(package)
    return written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    def __init__(self, comfyui: pathlib.Path, base: pathlib.Path, front_end_root: pathlib.Path | None = None):
        self.comfyui, self.base, self.front_end_root = comfyui, base, front_end_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base / "server.log"
        self.process = None

    def start(self, timeout: float = 120.0) -> "ComfyServer":
        return self.launch().ready(timeout)

    def launch(self) -> "ComfyServer":
        """Start the server process and return at once; ``ready()`` waits for it to answer."""
        (self.base / "custom_nodes").mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_FOLDER
        if not link.is_symlink():
            link.symlink_to(ROOT, target_is_directory=True)
        settings = self.base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        env = dict(os.environ)
        stand_ins = self.base / "stand_ins"
        if write_stand_ins(stand_ins):
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(stand_ins), env.get("PYTHONPATH")]))
        command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
                   "--disable-auto-launch"]
        if self.front_end_root is not None:
            command += ["--front-end-root", str(self.front_end_root)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.comfyui, env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def ready(self, timeout: float = 120.0, retries: int = 2) -> "ComfyServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "address already in use" in self.log().lower() and retries:  # the free port was taken meanwhile
                    self.port = free_port()
                    self.url = f"http://127.0.0.1:{self.port}"
                    return self.launch().ready(timeout, retries - 1)
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                self.get("/object_info/LayerLabPlan")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a test server keeps nothing worth a longer shutdown
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, body, timeout: float = 60) -> tuple[int, dict]:
        """POST ``body`` (bytes as they are, anything else as JSON); returns the status and the JSON answer."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": "application/json"},
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


class Servers:
    """The test session's ComfyUI servers, one per frontend, each started once and kept until the end;
    ``launch`` starts one early without waiting for it."""

    def __init__(self, comfyui: pathlib.Path, make_base):
        self.comfyui, self.make_base, self.started = comfyui, make_base, {}

    def launch(self, version: str) -> ComfyServer:
        """The server of frontend ``version`` (raises LookupError when it is not installed), launched."""
        if version not in self.started:
            server = ComfyServer(self.comfyui, self.make_base(), frontend_root(version)).launch()
            server.frontend = version
            self.started[version] = server
        return self.started[version]

    def serving(self, version: str) -> ComfyServer:
        return self.launch(version).ready()

    def pinned(self) -> ComfyServer:
        """The server of the frontend the ComfyUI under test pins."""
        return self.serving(frontends()[0][0])

    def close(self) -> None:
        for server in self.started.values():
            server.stop()
        self.started.clear()
