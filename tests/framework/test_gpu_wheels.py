"""The wheels scripts/gpu_prepare.sh carries to a GPU machine without a network cover what the GPU
rows import: every third-party module imported by the framework, the families, run.py, the bench
modules the rows run and the gpu-marked tests is in the GPU image or among the wheels."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.gpu_rows import gpu_test_files
from bench.gpu_wheels import image_closure, wheels
from hylab.instantiate import OPTIONAL_LOGGERS
from tests.helpers import ROOT

OURS = {"hylab", "datamodules", "lightning_modules", "callbacks", "bench", "tests", "hydra_plugins", "run"}
# the optional loggers' packages: imported only by a run that names that logger (its extra)
LOGGER_EXTRAS = {module for modules, _ in OPTIONAL_LOGGERS.values() for module in modules}
RUN_PATH = ["hylab", "datamodules", "lightning_modules", "callbacks", "hydra_plugins", "run.py", "bench/gpu.py",
            "bench/gpu_rows.py", "bench/overhead.py", "bench/ris.py", "tests/conftest.py", "tests/helpers.py"]


def sources() -> list[Path]:
    found = [Path(p) for p in gpu_test_files()]
    for entry in RUN_PATH:
        path = ROOT / entry
        found += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return found


def imported_modules(files: list[Path]) -> set[str]:
    """Top-level names of every absolute import in the files, function-level imports included."""
    names = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - OURS - set(sys.stdlib_module_names)


def extras() -> set[str]:
    """The distributions pyproject.toml lists as optional extras (no GPU row needs one)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(Requirement(r).name) for reqs in project.get("optional-dependencies", {}).values() for r in reqs}


def test_the_wheels_and_the_image_cover_every_import_of_the_gpu_rows():
    carried = set(wheels())
    assert {"hydra-core", "omegaconf", "antlr4-python3-runtime", "optuna", "mlxtend"} <= carried
    present = image_closure() | carried
    by_module = packages_distributions()
    # modules of no installed distribution are optional extras (mlflow, wandb, psycopg, ...); so are
    # those an extra names when it is installed (submitit: the slurm extra, for hydra/launcher=slurm)
    optional = extras()
    missing = {module: dists for module in imported_modules(sources()) - LOGGER_EXTRAS
               if (dists := {canonicalize_name(d) for d in by_module.get(module, [])}) and not dists & (present | optional)}
    assert not missing, f"imported on the GPU path but neither in the image nor carried: {missing}"
