"""Plumbing for tests that run against a real ComfyUI source checkout.

ComfyUI is found through the environment variable ``COMFYUI_PATH`` (the folder that holds
``comfy/model_patcher.py``).

Without it, every ``test_*.py`` module in this folder is reported as one skipped item with the
reason, and is never imported; test modules may therefore import ``comfy`` at module top and need
no guard of their own (the ``pytest_pycollect_makemodule`` hook below does this).

With it, this conftest, before any test module is imported:

- puts the checkout first on ``sys.path``;
- puts stand-ins for ``torchvision`` and ``torchaudio`` first on ``sys.path`` when the real packages
  cannot be imported (the same ones the live server gets, see ``live_server.py``): ComfyUI imports
  them at module level in a few places (0.33: ``from torchvision.ops import roi_align``); every name
  resolves, and calling one raises an error that names the stand-in;
- keeps ComfyUI from parsing pytest's command line and sets ``args.cpu`` before
  ``comfy.model_management`` is imported.

Tiny models, conditioning, latents and a sampling helper live in ``tiny_models``; import it as
``from dit_layer_lab.tests.comfy import tiny_models`` (works in every pytest import mode).
"""

import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import pytest


def _comfyui_path():
    """Return (path, None) when ComfyUI is usable, else (None, reason)."""
    value = os.environ.get("COMFYUI_PATH")
    if not value:
        return None, "COMFYUI_PATH is not set: tests that need a ComfyUI checkout are skipped"
    path = pathlib.Path(value).expanduser().resolve()
    if not (path / "comfy" / "model_patcher.py").is_file():
        return None, f"COMFYUI_PATH={value} has no comfy/model_patcher.py"
    return path, None


COMFYUI_PATH, SKIP_REASON = _comfyui_path()


class _SkippedModule(pytest.Module):
    def collect(self):
        pytest.skip(SKIP_REASON)


def pytest_pycollect_makemodule(module_path, parent):
    if COMFYUI_PATH is None:
        return _SkippedModule.from_parent(parent, path=module_path)
    return None


def _install_stand_ins():
    """The server's stand-ins (see live_server.py), first on sys.path, for packages that cannot be imported."""
    from dit_layer_lab.tests.comfy import live_server

    folder = pathlib.Path(tempfile.mkdtemp(prefix="layer_lab_stand_ins_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for package in live_server.write_stand_ins(folder):
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]  # present but unloadable (e.g. a CUDA-linked wheel)
    sys.path.insert(0, str(folder))


if COMFYUI_PATH is not None:
    if str(COMFYUI_PATH) not in sys.path:
        sys.path.insert(0, str(COMFYUI_PATH))
    _install_stand_ins()

    import comfy.options

    comfy.options.enable_args_parsing(False)  # parse [] rather than pytest's sys.argv
    if "comfy.model_management" in sys.modules:
        raise RuntimeError("comfy.model_management was imported before tests/comfy/conftest.py could set --cpu")
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


_SERVERS = None
SERVER_MODULES = ("test_browser.py", "test_live_routes.py")  # the modules that talk to a real server


def _servers():
    global _SERVERS
    if _SERVERS is None:
        from dit_layer_lab.tests.comfy import live_server

        bases = pathlib.Path(tempfile.mkdtemp(prefix="layer_lab_servers_"))
        atexit.register(shutil.rmtree, bases, ignore_errors=True)
        _SERVERS = live_server.Servers(COMFYUI_PATH, lambda: pathlib.Path(tempfile.mkdtemp(dir=bases)))
    return _SERVERS


def pytest_collection_finish(session):
    """Start the servers the live tests use while the tests before them run: each takes 10-20 s."""
    modules = {item.path.name for item in session.items}
    if COMFYUI_PATH is None or not modules & set(SERVER_MODULES):
        return
    from dit_layer_lab.tests.comfy import live_server

    versions = live_server.frontends() if "test_browser.py" in modules else live_server.frontends()[:1]
    for version, _ in versions:
        try:
            _servers().launch(version)
        except LookupError:
            pass  # not installed: the tests that need it say so


def pytest_sessionfinish(session):
    if _SERVERS is not None:
        _SERVERS.close()


@pytest.fixture(scope="session")
def servers():
    """The session's ComfyUI servers (live_server.Servers), one per frontend, each started once."""
    return _servers()


@pytest.fixture(autouse=True, scope="session")
def _temporary_comfyui_temp_directory(tmp_path_factory):
    """Preview images (the probe's heatmap on the node) go to a test folder, not the checkout's temp/."""
    import folder_paths

    previous = folder_paths.get_temp_directory()
    folder_paths.set_temp_directory(str(tmp_path_factory.mktemp("comfyui_temp")))
    yield
    folder_paths.set_temp_directory(previous)


class Progress:
    """What a node's progress bars were asked to show and what reached the UI.

    ``asked`` is every value a node gave its bars, as (value, total), in order; ``sent`` is what ComfyUI
    handed the UI through its progress hook. From ComfyUI 0.33 on the hook is throttled (the first and
    the last update, previews, and at most one update per 100 ms), so what is sent depends on the
    machine's speed: checks and interrupts read ``asked``, and ``sent`` only for what the throttle keeps
    (the last update). ``interrupt_from = n`` interrupts processing right after the first update asked
    at or past n, whatever reaches the UI; ``model_calls_after_interrupt`` counts the diffusion model's
    forward calls made after that (see ``count_model_calls``).
    """

    def __init__(self):
        self.sent: list[tuple[int, int]] = []
        self.asked: list[tuple[int, int]] = []
        self.interrupt_from: int | None = None
        self.interrupted_at: int | None = None
        self.model_calls_after_interrupt = 0
        self._handles = []

    def ask(self, value, total):
        self.asked.append((value, total))
        if self.interrupt_from is not None and self.interrupted_at is None and value >= self.interrupt_from:
            import comfy.model_management

            self.interrupted_at = value
            comfy.model_management.interrupt_current_processing()

    def hook(self, value, total, preview, node_id=None):
        self.sent.append((value, total))

    def clear(self):
        self.sent.clear()
        self.asked.clear()

    def count_model_calls(self, model) -> None:
        """Count the calls of ``model``'s diffusion model that start after the interrupt."""

        def pre_hook(module, args):
            if self.interrupted_at is not None:
                self.model_calls_after_interrupt += 1

        self._handles.append(model.model.diffusion_model.register_forward_pre_hook(pre_hook))

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def assert_one_bar_to_the_end(self, total: int) -> None:
        """One bar that never jumps back and ends full, as asked, and the UI got the full bar."""
        assert self.asked, "the node never updated a progress bar"
        assert {t for _, t in self.asked} == {total}
        values = [v for v, _ in self.asked]
        assert values == sorted(values) and values[-1] == total
        assert self.sent and self.sent[-1] == (total, total), "the UI never got the full bar"

    def run_ends(self, steps: int) -> list[int]:
        """The values at which the node ended its runs (multiples of ``steps``), in the order it asked for them."""
        ends = [v for v, _ in self.asked if v % steps == 0 and v > 0]
        return [v for k, v in enumerate(ends) if k == 0 or v != ends[k - 1]]


@pytest.fixture
def progress(monkeypatch):
    """Records progress; ``progress.interrupt_from = n`` interrupts at the first update asked at or past n."""
    import comfy.model_management
    import comfy.utils

    seen = Progress()
    previous = comfy.utils.PROGRESS_BAR_HOOK
    real_update = comfy.utils.ProgressBar.update_absolute

    def update_absolute(bar, value, total=None, preview=None):
        result = real_update(bar, value, total, preview)
        seen.ask(min(value, total or bar.total), total or bar.total)
        return result

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", update_absolute)
    comfy.utils.set_progress_bar_global_hook(seen.hook)
    try:
        yield seen
    finally:
        seen.remove_hooks()
        comfy.utils.set_progress_bar_global_hook(previous)
        comfy.model_management.interrupt_current_processing(False)
