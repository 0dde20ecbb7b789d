"""The resumable optuna sweeper: units on real optuna studies, then sweeps through run.py."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from hylab.cli import expand_overrides_files
from hylab.sweeper import (
    WORKER_ATTR,
    consecutive_runs,
    counted_trials,
    make_storage,
    recover_interrupted_trials,
    tell_result,
    worker_is_dead,
)
from tests.helpers import ROOT

SEARCH = ["hparams_search=seresnet_optuna", "debug=limit", "callbacks.progress_bar=null"]


def job_return(value=None, error=None) -> JobReturn:
    ret = JobReturn()
    ret.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    ret._return_value = error or value
    return ret


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_failed_and_nan_trials_are_recorded_as_failed():
    study = optuna.create_study(direction="maximize")
    results = [job_return(0.5), job_return(float("nan")), job_return(error=RuntimeError("boom")), job_return(None)]
    errors = [tell_result(study, study.ask(), ret, 1) for ret in results]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL]
    assert errors[0] is None and all(errors[1:]) and "boom" in str(errors[2])


def test_interrupted_trials_of_dead_workers_are_queued_again(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/deep/folder/study.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="minimize")
    done = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    study.tell(done, 0.3)
    interrupted = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    interrupted.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{dead_pid()}")
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{os.getpid()}")
    assert worker_is_dead(interrupted.user_attrs[WORKER_ATTR]) and not worker_is_dead(f"otherhost:{dead_pid()}")
    assert recover_interrupted_trials(study) == 1
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[3].params == {} and trials[3].system_attrs["fixed_params"] == interrupted.params
    assert counted_trials(study) == 2  # the interrupted one does not use up the budget; its retry will


def test_a_trial_whose_worker_died_before_claiming_it_is_queued_again(monkeypatch):
    import hylab.sweeper

    study = optuna.create_study(direction="minimize")
    unclaimed = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # killed before set_user_attr
    just_asked = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    assert recover_interrupted_trials(study) == 0  # within the grace period: its worker may be about to claim it
    monkeypatch.setattr(hylab.sweeper, "UNCLAIMED_GRACE_S", -1.0)
    just_asked.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{os.getpid()}")  # claimed by a live worker
    assert recover_interrupted_trials(study) == 1
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING] and unclaimed.number == 0


def test_workers_creating_one_sqlite_study_at_once(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    code = f"from hylab.sweeper import make_storage; import optuna; optuna.create_study(study_name='s', storage=make_storage({url!r}), load_if_exists=True)"
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), errors
    assert len(optuna.load_study(study_name="s", storage=url).get_trials()) == 0


def test_consecutive_runs_and_overrides_file(tmp_path):
    assert consecutive_runs([4, 5, 6, 9, 10, 12]) == [(0, 3), (3, 2), (5, 1)]
    best = tmp_path / "best_overrides.yaml"
    best.write_text(yaml.safe_dump({"overrides": ["model.optimizer.lr=0.002", "seed=3"]}))
    assert expand_overrides_files(["run.py", f"overrides_file={best}", "seed=4"]) == ["run.py", "model.optimizer.lr=0.002", "seed=3", "seed=4"]
    stock = tmp_path / "optimization_results.yaml"
    stock.write_text(yaml.safe_dump({"best_params": {"model.label_smoothing": 0.1}}))
    assert expand_overrides_files([f"overrides_file={stock}"]) == ["model.label_smoothing=0.1"]


def sweep_command(log_dir, *extra) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), *SEARCH, f"paths.log_dir={log_dir}", *extra]


def study_trials(log_dir) -> list:
    return optuna.load_study(study_name="debug_search", storage=f"sqlite:///{log_dir}/debug/optuna/debug_search/study.db").get_trials()


@pytest.mark.slow
def test_killed_sweep_resumes_without_training_twice(tmp_path):
    sweep_dir = tmp_path / "debug" / "optuna" / "debug_search"
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=3")
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (sweep_dir / "trial_0" / "metrics.json").is_file() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # mid-way: trial 0 done, trial 1 starting
    first.wait()
    finished_first = (sweep_dir / "trial_0" / "metrics.json").read_text()
    assert json.loads(finished_first)["status"] == "completed"

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    trials = study_trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert (sweep_dir / "trial_0" / "metrics.json").read_text() == finished_first  # reused, not redone
    assert all(t.number != 0 for t in trials if t.user_attrs.get("retry_of") is not None)
    # Every distinct configuration was trained once: one store entry each, and a retried trial
    # whose run had completed before the kill reused it instead of training.
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("trial_*/metrics.json")]
    trained = [r for r in records if r["status"] == "completed" and not r.get("reused_from")]
    assert len({r["config_hash"] for r in trained}) == len(trained)
    assert len(list((tmp_path / "store").glob("*/entry.json"))) == len(trained)
    best = yaml.safe_load((sweep_dir / "best_overrides.yaml").read_text())
    assert best["best_value"] == max(t.value for t in complete)


@pytest.mark.slow
def test_failing_trials_do_not_stop_the_sweep(tmp_path):
    search_dir = tmp_path / "conf" / "hparams_search"
    search_dir.mkdir(parents=True)
    (search_dir / "smoothing_grid.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /hydra/sweeper: hylab_optuna\n  - override /hydra/sweeper/sampler: grid\n"
        "hydra:\n  mode: MULTIRUN\n  sweep:\n    dir: ${paths.log_dir}/grid\n    subdir: trial_${hydra.job.num}\n"
        "  sweeper:\n    n_trials: 10\n    params:\n      model.label_smoothing: choice(0.1, 2.0)\n"
    )
    command = [sys.executable, str(ROOT / "run.py"), f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
               "hparams_search=smoothing_grid", "debug=limit", "callbacks.progress_bar=null", f"paths.log_dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{tmp_path}/grid/study.db")
    states = {t.params["model.label_smoothing"]: t.state for t in study.get_trials()}
    assert states == {0.1: TrialState.COMPLETE, 2.0: TrialState.FAIL}  # label_smoothing must be <= 1


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path):
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=4")
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    trials = study_trials(tmp_path)
    assert 4 <= len(trials) <= 5  # a simultaneous ask may overshoot by one
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == 2
    dirs = sorted(p.name for p in (tmp_path / "debug" / "optuna" / "debug_search").glob("trial_*"))
    assert dirs == sorted(f"trial_{t.number}" for t in trials)
