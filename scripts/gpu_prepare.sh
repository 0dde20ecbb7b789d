#!/usr/bin/env bash
# Before a GPU machine without a network: on a machine with PyPI, put into the working tree what
# scripts/gpu_check.sh needs there besides the GPU image (bench/gpu_wheels.py says which image):
#   .whl/                   the wheels (CPython 3.12, Linux x86_64) of the locked packages it lacks
#   .data/FashionMNIST/raw/ Fashion-MNIST (from Debian's dataset-fashion-mnist, installed if missing)
# Both are git-ignored: carry them with the working tree. Prints their size and the repository's.
set -euo pipefail
cd "$(dirname "$0")/.."
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
rm -rf .whl && mkdir -p .whl
for requirement in $(uv run --frozen python -m bench.gpu_wheels); do
  if ! python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${platforms[@]}" -d .whl "$requirement" 2>/dev/null; then
    # no wheel on PyPI (antlr4-python3-runtime is an sdist): build one, which must be pure Python
    python3 -m pip wheel -q --no-deps -w .whl "$requirement"
  fi
done
if ls .whl/*.whl | grep -v -e '-none-any\.whl$' -e 'cp312' -e 'abi3' -e 'py3-none' >/dev/null; then
  echo "gpu_prepare: a wheel in .whl fits neither CPython 3.12 nor any Python: $(ls .whl | grep -v -e none-any -e cp312 -e abi3)" >&2
  exit 2
fi
source=/usr/share/datasets/fashion-mnist
if [ ! -d "$source" ]; then
  apt-get install -y -q dataset-fashion-mnist >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
fi
mkdir -p .data/FashionMNIST/raw
cp "$source"/*-ubyte.gz .data/FashionMNIST/raw/
repo=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
extra=$(du -cb .whl .data | tail -1 | cut -f1)
mib() { echo "$(( ($1 + 1048575) / 1048576 )) MiB"; }
echo "$(ls .whl | wc -l) wheels in .whl ($(mib "$(du -sb .whl | cut -f1)")), Fashion-MNIST in .data ($(mib "$(du -sb .data | cut -f1)"))"
echo "tracked files $(mib "$repo") + .whl + .data = $(mib $(( repo + extra ))) of the 64 MiB that travel"
if (( repo + extra > 64 * 1048576 )); then
  echo "gpu_prepare: more than 64 MiB would travel" >&2
  exit 2
fi
echo 'carry: [".whl", ".data"]; then on the GPU machine: bash scripts/gpu_check.sh'
