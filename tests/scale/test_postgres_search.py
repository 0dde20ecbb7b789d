"""Three optuna workers on one study in a real PostgreSQL server (scripts/local_postgres.sh): each is
`run.py -m hparams_search=seresnet_optuna ... hydra.sweeper.storage=postgresql+psycopg://...`,
started together. One is killed mid-trial; the same command started again resumes that trial. No trial is lost or run twice, a failing trial is recorded as failed, and the study ends
with exactly n_trials trials that count."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from tests.helpers import ROOT, timeout_for

pytestmark = pytest.mark.slow

N_TRIALS = 6
# A trial queued with a learning rate the optimizer refuses: it must be recorded as FAIL.
BAD_LR = -1.0


def worker(url: str, study: str, log_dir: Path) -> subprocess.Popen:
    args = [
        "-m", "hparams_search=seresnet_optuna", "debug=limit", "trainer.max_epochs=1", "callbacks.progress_bar=null",
        f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={study}", f"hydra.sweeper.n_trials={N_TRIALS}",
        f"paths.log_dir={log_dir}",
    ]
    return subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
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
    workers = [worker(postgres_url, study, log_dir) for _ in range(3)]
    victim = workers[2]
    try:
        # as soon as the study exists, queue the failing trial (optuna's public enqueue API)
        wait_for(lambda: trials_of(postgres_url, study), 180, "the study to be created")
        optuna.load_study(study_name=study, storage=postgres_url).enqueue_trial({"model.optimizer.lr": BAD_LR})
        # kill the third worker while one of its trials runs
        mine = lambda: [  # noqa: E731
            t for t in trials_of(postgres_url, study)
            if t.state == TrialState.RUNNING and str(t.user_attrs.get("hylab_worker", "")).endswith(f":{victim.pid}")
            and t.params.get("model.optimizer.lr") != BAD_LR
        ]
        killed = wait_for(mine, 180, "a trial of the third worker")[0]
        time.sleep(1.0)  # mid-trial
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        left = {t.number: t.state for t in trials_of(postgres_url, study)}
        # the same command again, while the other two still run: it finds the dead worker's trial
        # and runs it again
        workers.append(worker(postgres_url, study, log_dir))
        running = [w for w in workers if w is not victim]
        outputs = [w.communicate(timeout=timeout_for(3.5))[0] for w in running]
        assert [w.returncode for w in running] == [0, 0, 0], "\n".join(o[-3000:] for o in outputs)
        wall_s = time.perf_counter() - started
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    return SimpleNamespace(
        url=postgres_url, study=study, log_dir=log_dir, killed=killed, left=left,
        trials=trials_of(postgres_url, study), wall_s=wall_s,
    )


def retried(trials) -> dict[int, object]:
    """Trials that run an interrupted trial again, by the number of the one they replace."""
    return {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}


def counted(trials) -> list:
    replaced = set(retried(trials))
    return [t for t in trials if t.number not in replaced]


def test_the_study_ends_with_exactly_n_trials_none_lost(search):
    states = {t.number: t.state.name for t in search.trials}
    ran = counted(search.trials)
    assert len(ran) == N_TRIALS, f"{len(ran)} counted trials for n_trials={N_TRIALS}: {states}"
    assert all(t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) for t in search.trials), states
    complete = [t for t in ran if t.state == TrialState.COMPLETE]
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


def test_the_killed_workers_trial_is_run_again_by_the_next_run(search):
    assert search.left[search.killed.number] == TrialState.RUNNING  # when its worker died
    retries = retried(search.trials)
    assert list(retries) == [search.killed.number]
    retry = retries[search.killed.number]
    assert retry.state == TrialState.COMPLETE and retry.params == search.killed.params
    assert next(t for t in search.trials if t.number == search.killed.number).state == TrialState.FAIL
