"""The resumable optuna sweeper: the search-space translation and units on real optuna studies,
then searches through run.py."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hylab.cli import expand_overrides_files
from hylab.sweeper import (
    RETRY_ATTR,
    WORKER_ATTR,
    ResumableOptunaSweep,
    consecutive_runs,
    counted_trials,
    make_storage,
    recover_interrupted_trials,
    tell_result,
    worker_is_dead,
)
from hylab.search_space import distribution, grid_values, search_space, trial_overrides
from tests.helpers import ROOT, timeout_for

SEARCH = ["hparams_search=seresnet_optuna", "debug=limit", "callbacks.progress_bar=null"]
X = {"x": FloatDistribution(0, 1)}


def job_return(value=None, error=None) -> JobReturn:
    ret = JobReturn()
    ret.status = JobStatus.FAILED if error else JobStatus.COMPLETED
    ret.return_value = error or value
    return ret


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def parsed(text: str):
    return OverridesParser.create().parse_override(text)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a=choice(x, 2, 0.5, true)", CategoricalDistribution(["x", 2, 0.5, True])),
        ("a=1,2,3", CategoricalDistribution([1, 2, 3])),
        ("a=interval(0.0, 0.1)", FloatDistribution(0.0, 0.1)),
        ("a=interval(1, 10)", FloatDistribution(1.0, 10.0)),  # Hydra reads interval bounds as floats
        ("a=int(interval(1, 10))", IntDistribution(1, 10)),
        ("a=tag(log, interval(1e-4, 1e-2))", FloatDistribution(1e-4, 1e-2, log=True)),
        ("a=tag(log, int(interval(1, 1024)))", IntDistribution(1, 1024, log=True)),
        ("a=range(1, 10, 3)", IntDistribution(1, 7, step=3)),  # the stop is excluded, as in Python
        ("a=range(5, 0, -2)", IntDistribution(1, 5, step=2)),
        ("a=tag(log, range(1, 9))", IntDistribution(1, 8, log=True)),
        ("a=range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("a=3", None),
    ],
)
def test_each_override_form_becomes_the_right_current_distribution(override, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated optuna distribution anywhere
        assert distribution(parsed(override)) == expected


def test_search_space_lets_the_command_line_win_and_keeps_plain_values_fixed():
    shuffled = distribution(parsed("a=shuffle(range(3))"))
    assert isinstance(shuffled, CategoricalDistribution) and sorted(shuffled.choices) == [0, 1, 2]
    config_params = ["lr=interval(0.0, 1.0)", "wd=interval(0.0, 0.1)", "depth=choice(1, 2)"]
    command_line = ["lr=0.5", "depth=2,4", "debug=limit", "+extra=x", "~gone"]
    space, fixed = search_space(config_params + command_line)
    assert space == {"wd": FloatDistribution(0.0, 0.1), "depth": CategoricalDistribution([2, 4])}
    assert fixed == ["lr=0.5", "debug=limit", "+extra=x", "~gone"]
    with pytest.raises(ValueError, match="tag\\(log"):
        distribution(parsed("a=tag(log, choice(1, 2))"))
    with pytest.raises(ValueError, match="step 1"):
        distribution(parsed("a=tag(log, range(1, 9, 2))"))


def test_grid_values_and_trial_overrides_read_back_by_hydra():
    assert grid_values("a", CategoricalDistribution(["x", 1])) == ["x", 1]
    assert grid_values("a", IntDistribution(1, 7, step=3)) == [1, 4, 7]
    assert grid_values("a", FloatDistribution(0.1, 0.4, step=0.1)) == [0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="GridSampler needs discrete values: a"):
        grid_values("a", FloatDistribution(0.0, 1.0))
    study = optuna.create_study()
    dists = {"f": FloatDistribution(1e-5, 1e-4, log=True), "b": CategoricalDistribution([True]), "n": CategoricalDistribution([None]), "s": CategoricalDistribution(["x y"])}
    trial = study.ask(dists)
    overrides = trial_overrides(trial, ["debug=limit"])
    assert overrides[-1] == "debug=limit"
    back = {o.get_key_element(): o.value() for o in OverridesParser.create().parse_overrides(overrides[:3])}
    assert back == {"f": trial.params["f"], "b": True, "n": None}


def test_failed_and_nan_trials_are_recorded_as_failed():
    study = optuna.create_study(direction="maximize")
    results = [job_return(0.5), job_return(float("nan")), job_return(error=RuntimeError("boom")), job_return(None)]
    errors = [tell_result(study, study.ask(), ret, 1) for ret in results]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.FAIL]
    assert errors[0] is None and all(errors[1:]) and "boom" in str(errors[2])
    assert len(counted_trials(study)) == 4  # failed trials use up the budget


def test_interrupted_trials_of_dead_workers_are_queued_again(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path}/deep/folder/study.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="minimize")
    done = study.ask(X)
    study.tell(done, 0.3)
    interrupted = study.ask(X)
    interrupted.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{dead_pid()}")
    alive = study.ask(X)
    alive.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{os.getpid()}")
    assert worker_is_dead(interrupted.user_attrs[WORKER_ATTR]) and not worker_is_dead(f"otherhost:{dead_pid()}")
    assert recover_interrupted_trials(study) == 1
    assert recover_interrupted_trials(study) == 0  # done once
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert trials[1].user_attrs == {WORKER_ATTR: interrupted.user_attrs[WORKER_ATTR]}  # nothing written on it
    assert [t.number for t in counted_trials(study)] == [0, 2]  # the interrupted one no longer counts
    retry = study.ask(X)  # the queued trial comes first, with the interrupted trial's parameters
    assert retry.number == 3 and retry.user_attrs == {RETRY_ATTR: 1} and retry.params == interrupted.params
    assert [t.number for t in counted_trials(study)] == [0, 2, 3]


def test_a_trial_whose_worker_died_before_claiming_it_is_queued_again(monkeypatch):
    import hylab.sweeper

    study = optuna.create_study(direction="minimize")
    unclaimed = study.ask(X)  # killed before set_user_attr
    just_asked = study.ask(X)
    assert recover_interrupted_trials(study) == 0  # within the grace period: its worker may be about to claim it
    monkeypatch.setattr(hylab.sweeper, "UNCLAIMED_GRACE_S", -1.0)
    just_asked.set_user_attr(WORKER_ATTR, f"{os.uname().nodename}:{os.getpid()}")  # claimed by a live worker
    assert recover_interrupted_trials(study) == 1
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING] and unclaimed.number == 0


def test_a_trial_whose_heartbeat_stopped_on_another_host_is_run_again(tmp_path):
    """A worker elsewhere beat once for its trial, then died: past the grace period any worker
    fails it and optuna queues its parameters again; the failed one stops counting."""
    from hylab.trial_heartbeat import Heartbeat

    url = f"sqlite:///{tmp_path}/study.db"
    storage = make_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dying = Heartbeat(study, storage, 1)
    (lost,) = ResumableOptunaSweep.ask(study, 1, X, n_trials=2, beats=dying)
    dying.stop()  # the worker is gone
    lost.set_user_attr(WORKER_ATTR, f"otherhost:{dead_pid()}")  # a pid this host cannot check
    survivor = optuna.load_study(study_name="s", storage=make_storage(url, heartbeat_interval=1, grace_period=1))
    assert recover_interrupted_trials(survivor) == 0  # still within the grace period
    time.sleep(2.5)
    beats = Heartbeat(survivor, make_storage(url, heartbeat_interval=1, grace_period=1), 1)
    try:
        recover_interrupted_trials(survivor)
        (retry,) = ResumableOptunaSweep.ask(survivor, 1, X, n_trials=2, beats=beats)
        time.sleep(2.5)  # this worker beats for its trial: it does not go stale
        recover_interrupted_trials(survivor)
    finally:
        beats.stop()
    trials = survivor.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert retry.number == 1 and retry.params == lost.params
    assert [t.number for t in counted_trials(survivor)] == [1]


def test_a_trial_asked_past_the_budget_by_a_second_worker_is_given_back(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    first, second = (optuna.create_study(study_name="s", storage=make_storage(url), load_if_exists=True) for _ in range(2))
    for _ in range(2):
        first.tell(first.ask(X), 0.5)
    # both workers saw 2 of 3 trials used and ask at the same moment
    (kept,) = ResumableOptunaSweep.ask(first, 1, X, n_trials=3)
    assert ResumableOptunaSweep.ask(second, 1, X, n_trials=3) == []
    trials = first.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert kept.number == 2 and [t.number for t in counted_trials(first)] == [0, 1, 2]
    assert trials[4].user_attrs == {RETRY_ATTR: 3}
    # a later run with a larger budget runs the given-back parameters first
    first.tell(kept, 0.1)
    (again,) = ResumableOptunaSweep.ask(second, 1, X, n_trials=4)
    assert again.number == 4 and again.params == trials[3].params


def test_workers_creating_one_sqlite_study_at_once(tmp_path):
    url = f"sqlite:///{tmp_path}/study.db"
    code = f"from hylab.sweeper import make_storage; import optuna; optuna.create_study(study_name='s', storage=make_storage({url!r}), load_if_exists=True)"
    workers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [worker.communicate(timeout=timeout_for(1))[1] for worker in workers]
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


def study_url(log_dir) -> str:
    return f"sqlite:///{log_dir}/debug/optuna/debug_search/study.db"


def study_trials(log_dir) -> list:
    return optuna.load_study(study_name="debug_search", storage=study_url(log_dir)).get_trials()


@pytest.mark.slow
def test_a_search_prints_no_deprecation_and_writes_the_best_overrides(tmp_path):
    done = subprocess.run(sweep_command(tmp_path, "hydra.sweeper.n_trials=1"), cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(5))
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "FutureWarning" not in output and "DeprecationWarning" not in output
    (trial,) = study_trials(tmp_path)
    sweep_dir = tmp_path / "debug" / "optuna" / "debug_search"
    record = json.loads((sweep_dir / "trial_0" / "metrics.json").read_text())
    assert trial.state == TrialState.COMPLETE and record["optimized_metric"] == {"name": "val/acc_best", "value": trial.value}
    assert set(trial.params) == {"model.optimizer.lr", "model.optimizer.weight_decay", "model.label_smoothing"}
    overrides = [f"{name}={value}" for name, value in trial.params.items()]
    job_overrides = yaml.safe_load((sweep_dir / "trial_0" / ".hydra" / "overrides.yaml").read_text())
    assert job_overrides[:3] == overrides and "debug=limit" in job_overrides
    best = yaml.safe_load((sweep_dir / "best_overrides.yaml").read_text())
    assert best == {"study": "debug_search", "storage": study_url(tmp_path), "best_trial": 0, "best_value": trial.value,
                    "direction": "maximize", "overrides": overrides}


@pytest.mark.slow
def trial_completed(trial_dir) -> bool:
    """A run writes its record when it starts (status running) and again when it ends."""
    try:
        return json.loads((trial_dir / "metrics.json").read_text())["status"] == "completed"
    except (OSError, ValueError, KeyError):
        return False


def test_killed_sweep_resumes_without_training_twice(tmp_path):
    sweep_dir = tmp_path / "debug" / "optuna" / "debug_search"
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=3")
    first = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not trial_completed(sweep_dir / "trial_0") and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # mid-way: trial 0 done, trial 1 starting
    first.wait()
    finished_first = (sweep_dir / "trial_0" / "metrics.json").read_text()
    assert json.loads(finished_first)["status"] == "completed"

    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(5))
    assert second.returncode == 0, second.stderr[-3000:]
    trials = study_trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert (sweep_dir / "trial_0" / "metrics.json").read_text() == finished_first  # reused, not redone
    # each trial the kill interrupted failed and was queued again under a new number (trial 0 too
    # when the kill lands after its run completed but before the sweeper told optuna: then the
    # retry reuses its run, checked below)
    retried = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs}
    assert {t.number for t in trials if t.state == TrialState.FAIL} == retried
    # Every distinct configuration was trained once: one store entry each, and a retried trial
    # whose run had completed before the kill reused it instead of training.
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("trial_*/metrics.json")]
    trained = [r for r in records if r["status"] == "completed" and not r.get("reused_from")]
    assert len({r["config_hash"] for r in trained}) == len(trained)
    assert len(list((tmp_path / "store").glob("*/entry.json"))) == len(trained)
    best = yaml.safe_load((sweep_dir / "best_overrides.yaml").read_text())
    best_trial = max(complete, key=lambda t: t.value)
    assert best["best_value"] == best_trial.value and best["best_trial"] == best_trial.number


@pytest.mark.slow
def test_failing_trials_do_not_stop_a_grid_search_from_the_command_line(tmp_path):
    search_dir = tmp_path / "conf" / "hparams_search"
    search_dir.mkdir(parents=True)
    (search_dir / "smoothing_grid.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - _optuna\n  - override /hydra/sweeper/optuna_sampler: grid\n"
        "hydra:\n  sweep:\n    dir: ${paths.log_dir}/grid\n"
        "  sweeper:\n    n_trials: 10\n    params:\n      model.label_smoothing: choice(0.3, 0.4)\n"
    )
    # the command line's sweep replaces the file's dimension
    command = [sys.executable, str(ROOT / "run.py"), f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "hparams_search=smoothing_grid",
               "model.label_smoothing=0.1,2.0", "debug=limit", "callbacks.progress_bar=null", f"paths.log_dir={tmp_path}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(5))
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="debug_search", storage=f"sqlite:///{tmp_path}/grid/study.db")
    states = {t.params["model.label_smoothing"]: t.state for t in study.get_trials()}
    assert states == {0.1: TrialState.COMPLETE, 2.0: TrialState.FAIL}  # label_smoothing must be <= 1
    assert sorted(p.name for p in (tmp_path / "grid").glob("trial_*")) == ["trial_0", "trial_1"]


@pytest.mark.slow
def test_two_workers_share_one_study_within_its_budget(tmp_path):
    # 3 trials for 2 workers: both ask for the last one at about the same time
    command = sweep_command(tmp_path, "hydra.sweeper.n_trials=3")
    workers = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=timeout_for(5))
        assert worker.returncode == 0, err[-3000:]
    trials = study_trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    # a trial asked past the budget was given back: failed, its parameters queued (not run)
    given_back = {t.number for t in trials if t.state == TrialState.FAIL}
    assert {t.user_attrs.get(RETRY_ATTR) for t in trials if t.state == TrialState.WAITING} == given_back
    assert len(trials) == 3 + 2 * len(given_back)
    assert len({t.user_attrs[WORKER_ATTR] for t in complete}) == 2
    dirs = sorted(p.name for p in (tmp_path / "debug" / "optuna" / "debug_search").glob("trial_*"))
    assert dirs == sorted(f"trial_{t.number}" for t in complete)
