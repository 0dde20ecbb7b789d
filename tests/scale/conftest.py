"""Services the scale tests run against: a one-node SLURM cluster and a PostgreSQL server on this
machine, started by the scripts in scripts/ (idempotent, so .ci/run may have started them already).
A test is skipped only when the service's packages are not installed; a service that is installed
but does not start fails the test."""

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT

SCRIPTS = ROOT / "scripts"


def _start(script: str, env: dict, timeout: float = 120) -> str:
    done = subprocess.run([str(SCRIPTS / script), "start"], capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{script} start failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _need(binaries: list[str], packages: str) -> None:
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/usr/lib/postgresql/15/bin"
    missing = [b for b in binaries if shutil.which(b, path=paths) is None and not list(Path("/usr/lib/postgresql").glob(f"*/bin/{b}"))]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: apt-get install {packages} (.ci/run does)")


def _need_module(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the {module} package is missing: uv sync --extra {extra} (.ci/run does)")


@pytest.fixture(scope="session")
def slurm_env() -> dict:
    """os.environ plus SLURM_CONF of the local cluster (scripts/local_slurm.sh), started if needed."""
    _need(["slurmctld", "slurmd", "munged", "sbatch"], "slurm-wlm munge")
    _need_module("hydra_plugins.hydra_submitit_launcher", "slurm")
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurmd starts jobs as their user)")
    env = {**os.environ, "HYLAB_SLURM_DIR": os.environ.get("HYLAB_SLURM_DIR", "/tmp/hylab-slurm")}
    _start("local_slurm.sh", env)
    return {**env, "SLURM_CONF": f"{env['HYLAB_SLURM_DIR']}/slurm.conf"}


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL of a throwaway PostgreSQL cluster (scripts/local_postgres.sh), started if needed."""
    _need(["initdb", "pg_ctl", "postgres"], "postgresql")
    _need_module("psycopg", "postgres")
    env = {**os.environ, "HYLAB_PG_DIR": os.environ.get("HYLAB_PG_DIR", "/tmp/hylab-postgres")}
    out = _start("local_postgres.sh", env)
    urls = [line.split("=", 1)[1] for line in out.splitlines() if line.startswith("HYLAB_PG_URL=")]
    assert urls, out
    return urls[0]
