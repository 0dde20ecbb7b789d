"""Three optuna workers on one study in a real PostgreSQL server (scripts/local_postgres.sh): each is
`run.py -m hparams_search=seresnet_optuna ... hydra.sweeper.storage=postgresql+psycopg://...`,
started together. One runs on "another host" (its own UTS namespace, another hostname) and is
SIGKILLed mid-trial: its heartbeat stops, and a surviving worker fails that trial and runs it
again. No trial is lost, left RUNNING or run twice, a failing trial is recorded as failed, and the
study ends with exactly n_trials trials that count."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from tests.helpers import ROOT, timeout_for

pytestmark = pytest.mark.slow

N_TRIALS = 6
# A trial queued with a learning rate the optimizer refuses: it must be recorded as FAIL.
BAD_LR = -1.0
OTHER_HOST = "other-host"
# Heartbeats every 2 s; a trial silent for 10 s lost its worker (generous on a loaded machine: a
# live worker declared dead would have its trial run twice).
HEARTBEAT = ["hydra.sweeper.heartbeat_interval=2", "hydra.sweeper.grace_period=10"]


def other_host(command: list[str]) -> list[str]:
    """`command` in its own UTS namespace named OTHER_HOST (exec all the way: the same pid)."""
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return ["unshare", *userns, "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh", *command]


def worker(url: str, study: str, log_dir: Path, elsewhere: bool = False) -> subprocess.Popen:
    args = [
        "-m", "hparams_search=seresnet_optuna", "debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={N_TRIALS}",
        f"paths.log_dir={log_dir}", *HEARTBEAT,
    ]
    command = [sys.executable, str(ROOT / "run.py"), *args]
    return subprocess.Popen(
        other_host(command) if elsewhere else command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if found := condition():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def trials_of(url: str, study: str) -> list:
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


@pytest.fixture(scope="module")
def search(postgres_url, tmp_path_factory) -> SimpleNamespace:
    log_dir = tmp_path_factory.mktemp("pg_search")
    study = f"scale_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    workers = [worker(postgres_url, study, log_dir, elsewhere=i == 2) for i in range(3)]
    victim = workers[2]
    try:
        # as soon as the study exists, queue the failing trial (optuna's public enqueue API)
        wait_for(lambda: trials_of(postgres_url, study), 180, "the study to be created")
        optuna.load_study(study_name=study, storage=postgres_url).enqueue_trial({"model.optimizer.lr": BAD_LR})
        # kill the third worker (on the other host) while one of its trials runs
        mine = lambda: [  # noqa: E731
            t for t in trials_of(postgres_url, study)
            if t.state == TrialState.RUNNING and t.user_attrs.get("hylab_worker") == f"{OTHER_HOST}:{victim.pid}"
            and t.params.get("model.optimizer.lr") != BAD_LR
        ]
        killed = wait_for(mine, 180, "a trial of the third worker")[0]
        # mid-trial: its run has started (its record exists), not merely been asked for
        run_began = lambda: list(log_dir.glob(f"debug/optuna/{study}/trial_{killed.number}/metrics.json"))  # noqa: E731
        wait_for(run_began, 180, "the killed worker's run to start")
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        left = {t.number: t.state for t in trials_of(postgres_url, study)}
        # nothing else is started: the two survivors notice the silent trial and run it again
        running = [w for w in workers if w is not victim]
        outputs = [w.communicate(timeout=timeout_for(3.5))[0] for w in running]
        assert [w.returncode for w in running] == [0, 0], "\n".join(o[-3000:] for o in outputs)
        wall_s = time.perf_counter() - started
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    return SimpleNamespace(
        url=postgres_url, study=study, log_dir=log_dir, killed=killed, left=left,
        trials=trials_of(postgres_url, study), wall_s=wall_s, outputs=outputs,
    )


def retried(trials) -> dict[int, object]:
    """Trials that run an interrupted trial again, by the number of the one they replace (a local
    retry names it in `retry_of`, optuna's retry of a silent trial in its system attrs)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        replaced = [(t.user_attrs.get("retry_of", RetryHeartbeatStaleTrialCallback.retried_trial_number(t)), t) for t in trials]
    return {number: t for number, t in replaced if number is not None}


def counted(trials) -> list:
    replaced = set(retried(trials))
    return [t for t in trials if t.number not in replaced]


def test_the_study_ends_with_exactly_n_trials_none_lost(search):
    states = {t.number: t.state.name for t in search.trials}
    ran = counted(search.trials)
    assert len(ran) == N_TRIALS, f"{len(ran)} counted trials for n_trials={N_TRIALS}: {states}"
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in search.trials), states  # none RUNNING
    complete = [t for t in ran if t.state == TrialState.COMPLETE]
    assert len(complete) == N_TRIALS - 1, states  # all but the trial queued to fail
    print(f"postgres study: {len(search.trials)} trials ({len(complete)} complete), wall {search.wall_s:.0f} s")


def test_no_trial_runs_twice(search):
    """Every trial ran in its own folder, and every completed trial has exactly one completed run."""
    sweep_dir = next(search.log_dir.glob(f"debug/optuna/{search.study}"))
    folders = {int(p.name.split("_")[1]) for p in sweep_dir.glob("trial_*")}
    assert folders == {t.number for t in search.trials}
    for t in search.trials:
        record = sweep_dir / f"trial_{t.number}" / "metrics.json"
        status = json.loads(record.read_text())["status"] if record.is_file() else None
        assert (status == "completed") == (t.state == TrialState.COMPLETE), (t.number, t.state, status)


def test_workers_started_together_propose_distinct_parameters(search):
    params = [tuple(sorted(t.params.items())) for t in counted(search.trials)]
    assert len(set(params)) == len(params)


def test_a_failing_trial_is_recorded_as_failed(search):
    failed = [t for t in counted(search.trials) if t.state == TrialState.FAIL]
    assert [t.params["model.optimizer.lr"] for t in failed] == [BAD_LR]


def test_a_trial_of_a_worker_killed_on_another_host_is_run_again_by_a_survivor(search):
    assert search.left[search.killed.number] == TrialState.RUNNING  # when its worker died
    retries = retried(search.trials)
    assert list(retries) == [search.killed.number]
    retry = retries[search.killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == search.killed.params
    assert next(t for t in search.trials if t.number == search.killed.number).state == TrialState.FAIL
    # its result is there: the survivor's run of it completed, with the value the study holds
    sweep_dir = next(search.log_dir.glob(f"debug/optuna/{search.study}"))
    record = json.loads((sweep_dir / f"trial_{retry.number}" / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert any(v == pytest.approx(retry.value) for v in record["metrics"].values() if isinstance(v, float))
    assert retry.user_attrs["hylab_worker"].split(":")[0] != OTHER_HOST
    assert any(f"[{search.killed.number}] lost their worker" in out for out in search.outputs)
    shown = ("lost their worker", "waiting for trial", "best trial")
    for i, out in enumerate(search.outputs):
        print(f"--- surviving worker {i + 1}\n" + "".join(line + "\n" for line in out.splitlines() if any(w in line for w in shown)))
    for t in search.trials:
        print(f"trial {t.number}: {t.state.name:<8} {t.user_attrs.get('hylab_worker', '').split(':')[0]:<10} runs again: {next(iter(retried([t])), '-')}")
