"""Two-phase fine-tuning sweeps through `run.py -m`: base models trained once through the run store,
also when two jobs ask at the same time; a killed sweep, run again, reuses what finished;
aggregation of a sweep; the launcher and search configs."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest

from hylab import aggregate
from lightning_modules.har import aggregate as har_aggregate
from hylab.sweeper import make_storage
from tests.helpers import ROOT, compose_run, timeout_for

# Two participants x two modes that start from a base model: 4 jobs, 2 base models. Two joblib
# workers, so the two jobs of one participant ask for its base model at the same time.
SWEEP = [
    "-m", "experiment=har_finetune", "data.target_subject=0,1", "finetune.mode=full_fine_tuning,target_only_fine_tuning",
    "hydra/launcher=local_parallel", "debug=limit", "callbacks.progress_bar=null", 'finetune.base.extra_overrides=["debug=limit"]',
]
WAITED = ("being trained by another process; waiting", "trained meanwhile")


def sweep_command(log_dir: Path, sweep_dir: Path) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), *SWEEP, f"paths.log_dir={log_dir}", f"hydra.sweep.dir={sweep_dir}"]


def completed(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except (OSError, ValueError):
        return False


def base_runs(log_dir: Path) -> list[Path]:
    """Run dirs of base models the store trained to completion."""
    return [p for p in log_dir.rglob("*_store-*") if completed(p / "metrics.json")]


def killed_mid_way(first: Path, log_dir: Path) -> bool:
    """Participant 0's jobs are done and participant 1's jobs are training its base model."""
    return (
        all(completed(first / job / "metrics.json") for job in ("0", "1"))
        and all((first / job / ".hydra").is_dir() for job in ("2", "3"))
        and len(list(log_dir.rglob("*_store-*"))) == 2
    )


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> SimpleNamespace:
    """The sweep killed mid-way (see killed_mid_way), then the same sweep run again into a second folder."""
    log_dir = tmp_path_factory.mktemp("har_sweep")
    first, second = log_dir / "first", log_dir / "second"
    proc = subprocess.Popen(sweep_command(log_dir, first), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    while not killed_mid_way(first, log_dir) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its workers and the base training under way
    proc.wait()
    assert killed_mid_way(first, log_dir), "the sweep did not reach participant 1's base model"
    before = {job: (first / job / "metrics.json").read_bytes() for job in ("0", "1")}
    again = subprocess.run(sweep_command(log_dir, second), cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(5))
    assert again.returncode == 0, again.stderr[-3000:]
    return SimpleNamespace(log_dir=log_dir, first=first, second=second, before=before)


def record(job_dir: Path) -> dict:
    return json.loads((job_dir / "metrics.json").read_text())


def base_key(job_dir: Path) -> str:
    job = record(job_dir)
    folder = Path(job.get("reused_from") or job_dir)
    return json.loads((folder / har_aggregate.BASE_RECORD).read_text())["key"]


@pytest.mark.slow
def test_killed_sweep_run_again_trains_nothing_twice_and_loses_nothing(sweeps):
    first, second = sweeps.first, sweeps.second
    assert all(completed(second / job / "metrics.json") for job in ("0", "1", "2", "3"))
    # participant 0's finished jobs are reused, their folders untouched
    for job in ("0", "1"):
        assert record(second / job)["reused_from"] == str(first / job)
        assert (first / job / "metrics.json").read_bytes() == sweeps.before[job]
        assert Path(record(first / job)["checkpoints"]["last"]).is_file()
    # every fine-tuning config and every base config was trained exactly once
    trained = [record(first / "0"), record(first / "1"), record(second / "2"), record(second / "3")]
    assert not any(r.get("reused_from") for r in trained)
    assert len({r["config_hash"] for r in trained}) == 4
    keys = {base_key(second / job) for job in ("0", "1", "2", "3")}
    assert len(keys) == 2 and len(base_runs(sweeps.log_dir)) == 2  # the killed attempt at base 1 did not complete
    stored = [json.loads(p.read_text()) for p in (sweeps.log_dir / "store").glob("*/entry.json")]
    assert sorted(e["key"] for e in stored if e["experiment"] == "har_base") == sorted(keys)


@pytest.mark.slow
def test_two_jobs_asking_for_one_base_model_train_it_once(sweeps):
    for pair in ((sweeps.first / "0", sweeps.first / "1"), (sweeps.second / "2", sweeps.second / "3")):
        assert base_key(pair[0]) == base_key(pair[1])
        logs = [(job / "run.log").read_text() for job in pair]
        trainers = [log for log in logs if "training har_base" in log]
        waiters = [log for log in logs if any(w in log for w in WAITED)]
        assert len(trainers) == 1 and len(waiters) == 1  # one trained it, the other waited and reused it


@pytest.mark.slow
def test_aggregate_tabulates_a_sweep_by_mode(sweeps, capsys):
    assert har_aggregate.main([str(sweeps.second), "--by", "finetune.mode"]) == 0
    printed = capsys.readouterr().out
    assert "4 completed jobs (2 reused from the run store), 0 unfinished; 2 distinct base models" in printed
    rows = {row["finetune.mode"]: row for row in aggregate.summarize(aggregate.read_jobs(sweeps.second)[0], ["finetune.mode"], ["test/acc"])}
    assert set(rows) == {"full_fine_tuning", "target_only_fine_tuning"} and all(row["n"] == 2 for row in rows.values())
    values = [record(sweeps.second / job)["metrics"]["test/acc"] for job in ("0", "2")]  # the full_fine_tuning jobs
    assert rows["full_fine_tuning"]["test/acc mean"] == pytest.approx(sum(values) / 2)
    assert rows["full_fine_tuning"]["test/acc std"] == pytest.approx(abs(values[0] - values[1]) / 2**0.5)
    assert "| finetune.mode | n | test/acc | test/f1_macro | test/loss |" in (sweeps.second / "aggregate.md").read_text()
    assert (sweeps.second / "aggregate.csv").read_text().startswith("finetune.mode,n,test/acc mean,test/acc std")
    # the killed sweep's folder: two finished jobs, the two killed ones counted as unfinished
    jobs, unfinished = aggregate.read_jobs(sweeps.first)
    assert len(jobs) == 2 and len(unfinished) == 2


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None, reason="the plugin is installed")
def test_slurm_launcher_without_its_plugin_says_how_to_install_it(tmp_path):
    args = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm", "experiment=har_base", f"paths.log_dir={tmp_path}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(1), env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert done.returncode != 0
    assert "hydra/launcher=slurm needs the hydra-submitit-launcher plugin: install it with `uv sync --extra slurm`" in done.stderr
    assert not list(tmp_path.rglob("metrics.json"))


def test_har_search_uses_the_resumable_sweeper_and_a_journal_file_serves_many_workers(tmp_path):
    cfg = compose_run(["experiment=har_finetune", "hparams_search=har_optuna", "hydra.sweeper.storage=journal:${hydra.sweep.dir}/journal.log"], tmp_path)
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.hylab_sweeper.ResumableOptunaSweeper"
    assert cfg.store.reuse and cfg.optimized_metric == "val/f1_macro_best"
    url = f"journal:{tmp_path}/study/journal.log"  # what the override above resolves to, in a temp folder
    assert str(cfg.hydra.sweeper.storage).startswith("journal:") and str(cfg.hydra.sweeper.storage).endswith("/journal.log")
    workers = [optuna.create_study(study_name="s", storage=make_storage(url), load_if_exists=True) for _ in range(2)]
    for worker, x in zip(workers, (0.2, 0.7)):
        trial = worker.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        worker.tell(trial, x)
    assert sorted(t.value for t in workers[0].get_trials()) == [0.2, 0.7]  # each sees the other's trial
