#!/usr/bin/env bash
# Run the test suite. Installs what the tests need (a CPU torch only if no torch is installed).
# With COMFYUI_PATH pointing at a ComfyUI checkout, the tests that need ComfyUI run too, in the
# environment scripts/setup_comfyui_tests.sh builds for that checkout (built on first use);
# without it they are reported as skipped. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
python=python
if [ -n "${COMFYUI_PATH:-}" ]; then
  python="$(bash scripts/setup_comfyui_tests.sh "$COMFYUI_PATH")"
fi
exec "$python" -m pytest "$@"
