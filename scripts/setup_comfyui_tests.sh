#!/usr/bin/env bash
# Build the environment the tests under tests/comfy run in, for the ComfyUI checkout given as the
# argument, and print the path of its Python:
#   - a virtual environment .venv/comfyui-<version> that sees this Python's packages (its torch is
#     kept) with that ComfyUI's requirements.txt installed in it (torchvision and torchaudio left
#     out: tests/comfy stands in for them; spandrel without its dependencies);
#   - Chromium (Debian's package, when run as root and none is found), playwright-core
#     (tests/browser/package-lock.json), and the frontends of tests/browser/frontends.txt under
#     .frontends/<version>, for the browser tests.
# Nothing is installed into the environment ComfyUI itself runs in. A second run with the same
# requirements installs nothing. scripts/test.sh calls this when COMFYUI_PATH is set.
#   bash scripts/setup_comfyui_tests.sh /path/to/ComfyUI
set -euo pipefail
comfyui="$(cd "${1:?usage: scripts/setup_comfyui_tests.sh /path/to/ComfyUI}" && pwd)"
cd "$(dirname "$0")/.."
log() { echo "setup_comfyui_tests: $*" >&2; }

python -c "import torch" 2>/dev/null || python -m pip install --quiet torch==2.13.0 >&2
version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$comfyui/comfyui_version.py" 2>/dev/null)"
venv=".venv/comfyui-${version:-unknown}"
stamp="$venv/.requirements.sha256"
wanted="$(cat "$comfyui/requirements.txt" requirements-test.txt | sha256sum | cut -d' ' -f1)"

if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  log "building $venv for ComfyUI ${version:-?} at $comfyui"
  python -m venv --system-site-packages "$venv"
  torch_version="$("$venv/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  # Pinned to the installed torch: torchvision and kornia would otherwise pull in another one.
  echo "torch==$torch_version" > "$work/constraints.txt"
  grep -v -E '^\s*(torch|torchvision|torchaudio|spandrel)\s*$' "$comfyui/requirements.txt" > "$work/requirements.txt"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -c "$work/constraints.txt" \
    -r "$work/requirements.txt" -r requirements-test.txt >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps spandrel >&2
  echo "$wanted" > "$stamp"
fi

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ -z "${LAYER_LAB_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing Chromium (Debian's package)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >&2
  else
    log "no Chromium: the browser tests will skip (apt-get install chromium, or set LAYER_LAB_CHROMIUM)"
  fi
fi
# playwright-core only (exact version from package-lock.json): it drives the system Chromium and never
# downloads a browser.
if command -v npm >/dev/null; then
  [ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund --silent >&2
else
  log "no npm: the browser tests will skip"
fi

# The frontends of tests/browser/frontends.txt, beside the one this ComfyUI pins (which its requirements
# installed): --no-deps and --target keep them out of the environment; the server gets --front-end-root.
grep -v '^\s*#' tests/browser/frontends.txt | while read -r frontend _; do
  [ -n "$frontend" ] || continue
  if [ ! -f ".frontends/$frontend/comfyui_frontend_package/static/index.html" ]; then
    python -m pip install --quiet --disable-pip-version-check --no-deps --target ".frontends/$frontend" \
      "comfyui-frontend-package==$frontend" >&2
  fi
done

echo "$PWD/$venv/bin/python"
