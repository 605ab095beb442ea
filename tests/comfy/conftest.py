"""Plumbing for tests that run against a real ComfyUI source checkout.

ComfyUI is found through the environment variable ``COMFYUI_PATH`` (the folder that holds
``comfy/model_patcher.py``).

Without it, every ``test_*.py`` module in this folder is reported as one skipped item with the
reason, and is never imported; test modules may therefore import ``comfy`` at module top and need
no guard of their own (the ``pytest_pycollect_makemodule`` hook below does this).

With it, this conftest, before any test module is imported:

- puts the checkout first on ``sys.path``;
- installs stand-ins for ``torchvision`` (with ``transforms`` and ``transforms.functional``) and
  ``torchaudio`` when the real packages cannot be imported: ComfyUI imports them at module level
  in a few places; any attribute use raises an ``AttributeError`` that names the stand-in;
- keeps ComfyUI from parsing pytest's command line and sets ``args.cpu`` before
  ``comfy.model_management`` is imported.

Tiny models, conditioning, latents and a sampling helper live in ``tiny_models``; import it as
``from dit_layer_lab.tests.comfy import tiny_models`` (works in every pytest import mode).
"""

import importlib
import importlib.machinery
import importlib.util
import os
import pathlib
import sys

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


def _stand_in(name):
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise AttributeError(
            f"{name}.{attr} is unavailable: {name} is a stand-in installed by tests/comfy/conftest.py "
            f"because the real package cannot be imported here"
        )

    module.__getattr__ = __getattr__
    return module


def _install_stand_ins(package, submodules):
    try:
        importlib.import_module(package)
        return
    except Exception:  # absent, or present but unloadable (e.g. a CUDA-linked wheel)
        for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
            del sys.modules[name]
    for name in (package, *(f"{package}.{sub}" for sub in submodules)):
        sys.modules[name] = _stand_in(name)
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, sys.modules[name])


if COMFYUI_PATH is not None:
    if str(COMFYUI_PATH) not in sys.path:
        sys.path.insert(0, str(COMFYUI_PATH))
    _install_stand_ins("torchvision", ("transforms", "transforms.functional"))
    _install_stand_ins("torchaudio", ("functional", "transforms"))

    import comfy.options

    comfy.options.enable_args_parsing(False)  # parse [] rather than pytest's sys.argv
    if "comfy.model_management" in sys.modules:
        raise RuntimeError("comfy.model_management was imported before tests/comfy/conftest.py could set --cpu")
    import comfy.cli_args

    comfy.cli_args.args.cpu = True


@pytest.fixture(autouse=True, scope="session")
def _temporary_comfyui_temp_directory(tmp_path_factory):
    """Preview images (the probe's heatmap on the node) go to a test folder, not the checkout's temp/."""
    import folder_paths

    previous = folder_paths.get_temp_directory()
    folder_paths.set_temp_directory(str(tmp_path_factory.mktemp("comfyui_temp")))
    yield
    folder_paths.set_temp_directory(previous)
