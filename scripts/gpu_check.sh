#!/usr/bin/env bash
# On a fresh GPU machine: install the environment, then measure every GPU path (bench/gpu.py) in
# at most nine minutes, installation included. Prints one table and writes docs/gpu.json.
# Arguments go to the bench (e.g. --only gpt).
#   Without .whl/: uv sync --locked (needs the package index), then the bench in that environment.
#   With .whl/ (a machine without a network): the machine's python3 (a CUDA torch image, see bench/gpu_wheels.py) plus the
#   wheels in .whl/, and Fashion-MNIST from .data/: both made by scripts/gpu_prepare.sh elsewhere
#   and carried in with the working tree. GPU_CHECK_OFFLINE=1 insists on this way (exit 2 without .whl/).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
export PATH="$HOME/.local/bin:$PATH"
budget() { local left=$(( 525 - ($(date +%s) - started) )); echo $(( left > 60 ? left : 60 )); }

# Carried wheels mean the machine was prepared for having no network: use them rather than probe.
if [ "${GPU_CHECK_OFFLINE:-0}" != 1 ] && ! ls .whl/*.whl >/dev/null 2>&1; then
  if ! command -v uv >/dev/null 2>&1; then
    python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --user --break-system-packages uv
  fi
  uv sync --locked
  exec uv run python -m bench.gpu --budget "$(budget)" "$@"
fi

if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "gpu_check: GPU_CHECK_OFFLINE=1 but there is no .whl/: run 'bash scripts/gpu_prepare.sh' on a machine with PyPI and carry .whl and .data in" >&2
  exit 2
fi
site=/tmp/hylab-site
rm -rf "$site"
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
else
  # no pip in the image: a wheel is a zip whose files go to site-packages as they are
  python3 - "$site" .whl/*.whl <<'EOF'
import shutil, sys, zipfile
from pathlib import Path
site = Path(sys.argv[1])
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(site)
for data in site.glob("*.data"):  # <dist>.data/purelib and platlib belong in site-packages too
    for lib in ("purelib", "platlib"):
        if (data / lib).is_dir():
            shutil.copytree(data / lib, site, dirs_exist_ok=True)
EOF
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
echo "offline: $(python3 --version) from $(command -v python3), $(ls .whl/*.whl | wc -l) wheels from .whl in $site"
exec python3 -m bench.gpu --budget "$(budget)" "$@"
