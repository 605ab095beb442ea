"""Import the repository as the package ``dit_layer_lab``, the way ComfyUI imports a custom node folder."""

import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

if "dit_layer_lab" not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        "dit_layer_lab", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules["dit_layer_lab"] = package
    spec.loader.exec_module(package)
