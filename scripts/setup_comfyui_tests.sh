#!/usr/bin/env bash
# Install what the tests under tests/comfy need, for the ComfyUI checkout given as the argument:
# ComfyUI's server requirements (keeping the installed torch), Chromium, playwright-core, and the
# frontends of the browser matrix (tests/browser/frontends.txt), each under .frontends/<version>.
#   bash scripts/setup_comfyui_tests.sh /path/to/ComfyUI
# Then: COMFYUI_PATH=/path/to/ComfyUI bash scripts/test.sh -q
set -euo pipefail
comfyui="$(cd "${1:?usage: scripts/setup_comfyui_tests.sh /path/to/ComfyUI}" && pwd)"
cd "$(dirname "$0")/.."

python -c "import torch" 2>/dev/null || python -m pip install torch==2.13.0
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Pin the installed torch: spandrel depends on torchvision, which would otherwise pull another torch.
echo "torch==$torch_version" > "$work/constraints.txt"
grep -v -E '^\s*(torch|torchvision|torchaudio|spandrel)\s*$' "$comfyui/requirements.txt" > "$work/requirements.txt"
python -m pip install -c "$work/constraints.txt" -r "$work/requirements.txt" requests
python -m pip install --no-deps spandrel

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && [ -z "${LAYER_LAB_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "Install Chromium (Debian: apt-get install chromium) or set LAYER_LAB_CHROMIUM to a Chromium binary." >&2
  fi
fi
# playwright-core only (exact version from package-lock.json); it drives the system Chromium and
# never downloads a browser.
npm ci --prefix tests/browser --no-audit --no-fund

# The frontends of the browser matrix, beside the one ComfyUI installed: the live server serves each
# with --front-end-root. --no-deps and --target keep them out of the environment ComfyUI runs in.
grep -v '^\s*#' tests/browser/frontends.txt | while read -r version _; do
  [ -n "$version" ] || continue
  if [ ! -f ".frontends/$version/comfyui_frontend_package/static/index.html" ]; then
    python -m pip install --no-deps --target ".frontends/$version" "comfyui-frontend-package==$version"
  fi
done
