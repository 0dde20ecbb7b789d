#!/usr/bin/env bash
# On a fresh GPU machine: install the locked environment, then measure every GPU path
# (bench/gpu.py) in at most nine minutes, uv sync included. Prints one table and writes
# docs/gpu.json. Arguments go to the bench (e.g. --only gpt).
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
export PATH="$HOME/.local/bin:$PATH"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet uv 2>/dev/null || python3 -m pip install --quiet --user --break-system-packages uv
fi
uv sync --locked
left=$(( 525 - ($(date +%s) - started) ))
exec uv run python -m bench.gpu --budget "$(( left > 60 ? left : 60 ))" "$@"
