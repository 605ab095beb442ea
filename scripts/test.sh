#!/usr/bin/env bash
# Run the test suite. Installs what the tests need (a CPU torch only if no torch is installed).
# Tests that need ComfyUI run when COMFYUI_PATH points at a ComfyUI checkout, and skip otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -r requirements-test.txt
exec python -m pytest "$@"
