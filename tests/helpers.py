"""Drive runs the way users do: Hydra compose in-process (fast), or run.py as a subprocess (the CLI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import hylab.resolvers  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def compose_run(overrides: list[str], run_dir: Path, log_dir: Path | None = None) -> DictConfig:
    """The config `python run.py <overrides>` would get, with its run dir at `run_dir` (and its
    log dir at `log_dir`, by default a `logs` folder beside the run dir)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.paths.log_dir = str(log_dir or run_dir.parent / "logs")
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_in_process(overrides: list[str], run_dir: Path, log_dir: Path | None = None) -> tuple[float | None, dict]:
    """Run a config in this process; returns (optimized value, metrics.json)."""
    from hylab.runner import run

    value = run(compose_run(overrides, run_dir, log_dir))
    return value, json.loads((run_dir / "metrics.json").read_text())


# What a subprocess limit scales with: one short training run (debug=limit, a few steps: start,
# imports, train, test, exit) takes up to this long on a loaded 2-core machine; a command that
# stops before training (bad input, --cfg) counts as a tenth of one. A slower machine raises
# every limit with HYLAB_TEST_TIMEOUT_FACTOR (e.g. 3).
SHORT_RUN_S = 120
TIMEOUT_FACTOR_ENV = "HYLAB_TEST_TIMEOUT_FACTOR"


def timeout_for(runs: float = 1.0) -> float:
    """The subprocess limit for a command doing `runs` short training runs."""
    return SHORT_RUN_S * runs * float(os.environ.get(TIMEOUT_FACTOR_ENV, "1"))


def run_cli(args: list[str], log_dir: Path, runs: float = 1.0, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python run.py <args>` with logs under `log_dir`, limited to `timeout_for(runs)`."""
    command = [sys.executable, str(ROOT / "run.py"), *args, f"paths.log_dir={log_dir}"]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(runs), env={**os.environ, **(env or {})}
    )


def run_dirs(log_dir: Path) -> list[Path]:
    """Every folder under log_dir that holds a metrics.json."""
    return sorted(p.parent for p in Path(log_dir).rglob("metrics.json"))


def check_settings(overrides: list[str], run_dir: Path) -> None:
    """Check the composed model, data and callback nodes against their settings schemas."""
    from hylab.settings import check_node

    cfg = compose_run(overrides, run_dir)
    check_node(cfg.model, "model")
    check_node(cfg.data, "data")
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is not None:
            check_node(node, f"callbacks.{name}")


def assert_bad_setting(overrides: list[str], message: str, run_dir: Path) -> None:
    """The settings check refuses `overrides` with one line matching the regex `message`."""
    import pytest

    from hylab.errors import UserError

    with pytest.raises(UserError, match=message) as error:
        check_settings(overrides, run_dir)
    assert "\n" not in str(error.value)
