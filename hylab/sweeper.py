"""An optuna sweeper for Hydra whose studies survive crashes and are shared by many workers.

Built on Hydra's sweeper plugin API and optuna's ask/tell API:

- The search space is `hydra.sweeper.params` plus the sweep overrides of the command line
  (`a=1,2,3`), in Hydra's override grammar (see `distribution`); plain values are fixed.
- The study lives in persistent storage (`sqlite:///<file>`, any SQLAlchemy URL, or
  `journal:<file>` for many workers on a shared file system); the folder is created.
- Re-running the same command resumes the study: the trial budget `n_trials` counts the
  trials already finished or running, so a finished study runs nothing more. A worker whose
  freshly asked trial falls beyond the budget (another worker asked at the same moment) gives
  it back and stops, so workers sharing a study do not run more than `n_trials`.
- Trials left RUNNING by a worker on this host that no longer exists (a killed sweep) are
  marked failed and their parameters queued again (the new trial's user attr `retry_of` names
  the original, which then no longer uses up the budget), so an interrupted trial is not lost.
  With `store.reuse=true` a retried trial whose run had in fact completed reuses it.
- On an RDB storage (PostgreSQL, MySQL, SQLite) each worker also beats for its trials
  (`heartbeat_interval`); a trial silent for `grace_period` lost its worker on whatever host it
  ran, and any worker fails it and queues it again (optuna's heartbeat and
  `RetryHeartbeatStaleTrialCallback`, see hylab/trial_heartbeat.py). A worker whose budget is used
  waits while trials run elsewhere, so a dead worker's trial is run again by a survivor.
- Trials are numbered by the study, and each runs in `<sweep dir>/trial_<number>`, so workers
  sharing a study never write into one folder.
- A trial that raises or returns NaN is recorded as failed and the sweep goes on
  (`max_failure_rate` decides when too many failures stop it).
- `pruner` (median, successive_halving, hyperband or none: optuna's pruners, see hylab/pruning.py)
  stops unpromising trials from inside their runs; a stopped trial is recorded PRUNED and counts
  toward `n_trials`, so a resumed search does not train it again.
- After every batch the best trial's parameters are written to `<sweep dir>/best_overrides.yaml`;
  `python run.py ... overrides_file=<that file>` trains with them.
"""

import functools
import logging
import math
import os
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import optuna

from hylab.distributed_checks import check_storage_driver
from hylab.trial_heartbeat import WAIT_POLL_S, Heartbeat, fail_stale, quiet_heartbeat_warnings, rdb_storage, replaced_trials, seconds
from hylab.pruning import check_pruning, make_pruner, pruned_epoch
from hylab.search_space import grid_values, search_space, trial_overrides
import yaml
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger("hylab.sweeper")

WORKER_ATTR = "hylab_worker"
# On a queued trial: the number of the trial whose parameters it runs again.
RETRY_ATTR = "retry_of"
# A worker records itself on a trial right after asking for it; a RUNNING trial still without a
# worker this long after it started lost its worker in between (killed at that moment).
UNCLAIMED_GRACE_S = 5.0
BEST_FILE = "best_overrides.yaml"
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)


# --- the study: storage, workers, budget ------------------------------------------------------


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_is_dead(worker: str | None) -> bool:
    """Only a worker on this host can be checked; one elsewhere is assumed alive."""
    if not worker or ":" not in worker:
        return False
    host, pid = worker.rsplit(":", 1)
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def make_storage(url: str | None, heartbeat_interval: int | None = None, grace_period: int | None = None):
    """An optuna storage from a URL; the folder of a SQLite or journal file is created. An RDB
    storage gets optuna's heartbeat when `heartbeat_interval` is set (a journal has none)."""
    if not url:
        return None
    check_storage_driver(url)
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        database = Path(url[len("sqlite:///") :])
        database.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        # a new database gets its tables and schema version on first use; two workers starting
        # together would both write them (UNIQUE constraint failed: alembic_version)
        with FileLock(f"{database}.lock"):
            return rdb_storage(url, heartbeat_interval, grace_period)
    return rdb_storage(url, heartbeat_interval, grace_period)


def unclaimed_for_long(trial: FrozenTrial) -> bool:
    if WORKER_ATTR in trial.user_attrs or trial.datetime_start is None:
        return False
    return (datetime.now() - trial.datetime_start).total_seconds() > UNCLAIMED_GRACE_S


def _tell(study: optuna.Study, trial: optuna.Trial | int, **result) -> None:
    try:
        study.tell(trial, **result)
    except RuntimeError as err:
        # GridSampler calls study.stop() once the grid is exhausted, which optuna refuses outside
        # study.optimize; the trial is recorded by then and the budget ends the loop.
        if "Study.stop" not in str(err):
            raise


def requeue(study: optuna.Study, trial: FrozenTrial | optuna.Trial) -> bool:
    """Fail a RUNNING trial and queue its parameters again as a new trial (`retry_of` = its
    number); False when another worker finished it first."""
    try:
        _tell(study, trial.number, state=TrialState.FAIL)
    except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
        return False
    study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)
    return True


def recover_interrupted_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials of dead local workers (or of none) and queue their parameters again;
    with heartbeats, also those of workers on any host whose heartbeat stopped."""
    before = replaced_trials(study.get_trials(deepcopy=False))
    fail_stale(study)
    if stale := replaced_trials(study.get_trials(deepcopy=False)) - before:
        log.warning(f"trial(s) {sorted(stale)} lost their worker (no heartbeat within the grace period); queued again")
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if (worker_is_dead(worker) or unclaimed_for_long(trial)) and requeue(study, trial):
            log.warning(f"trial {trial.number} was interrupted ({worker or 'no worker'} is gone); queued again")
            recovered += 1
    return recovered


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that use up the budget, by number: finished or running, less the failed ones whose
    parameters were queued again (their retry counts instead, once asked)."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs[RETRY_ATTR] for t in trials if RETRY_ATTR in t.user_attrs} | replaced_trials(trials)
    return sorted((t for t in trials if t.state in COUNTED and not (t.state == TrialState.FAIL and t.number in requeued)), key=lambda t: t.number)


def beyond_budget(study: optuna.Study, number: int, n_trials: int) -> bool:
    """Whether the running trial `number` is past the first n_trials counted trials: two workers
    that asked at the same moment both got one, and the later number gives its back."""
    return sum(t.number < number for t in counted_trials(study)) >= n_trials


def tell_result(study: optuna.Study, trial: optuna.Trial, job_return, n_objectives: int) -> Exception | None:
    """Record a job's result; an exception, a missing value or NaN makes the trial FAIL."""
    try:
        raw = job_return.return_value  # re-raises the job's exception
        if (epoch := stored_pruned_epoch(study, trial.number)) is not None:
            _tell_own(study, trial, state=TrialState.PRUNED)  # optuna keeps its last reported value
            log.info(f"trial {trial.number} pruned at epoch {epoch}")
            return None
        values = [float(v) for v in (raw if n_objectives > 1 else [raw])]
        if len(values) != n_objectives or not all(math.isfinite(v) for v in values):
            raise ValueError(f"the run returned {raw!r}, not {n_objectives} finite value(s)")
    except Exception as err:  # any failure of the job is a failed trial, not a failed sweep
        _tell_own(study, trial, state=TrialState.FAIL)
        log.warning(f"trial {trial.number} failed: {type(err).__name__}: {err}")
        return err
    _tell_own(study, trial, values=values)
    return None


def _tell_own(study: optuna.Study, trial: optuna.Trial, **result) -> None:
    """Tell a trial this worker runs; one another worker already failed (its heartbeat was late
    by more than the grace period) keeps its state, and its retry stands."""
    try:
        _tell(study, trial, **result)
    except ValueError as err:
        if "Cannot tell a" not in str(err):
            raise
        log.warning(f"trial {trial.number} was declared dead by another worker and queued again: {err}")


def stored_pruned_epoch(study: optuna.Study, number: int) -> int | None:
    """The epoch at which the job of trial `number` was pruned (it marks the stored trial)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    return pruned_epoch(trial) if trial is not None else None


def consecutive_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Split trial numbers into (start index, length) runs of consecutive numbers."""
    runs, start = [], 0
    for index in range(1, len(numbers) + 1):
        if index == len(numbers) or numbers[index] != numbers[index - 1] + 1:
            runs.append((start, index - start))
            start = index
    return runs


def write_best(study: optuna.Study, sweep_dir: Path, storage_url: str | None) -> Path | None:
    if len(study.directions) != 1 or not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    content = {
        "study": study.study_name,
        "storage": storage_url,
        "best_trial": best.number,
        "best_value": best.value,
        "direction": study.direction.name.lower(),
        "overrides": trial_overrides(best, []),
    }
    path = sweep_dir / BEST_FILE
    from hylab.records import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(content, sort_keys=False))
    return path


# --- the Hydra sweeper ------------------------------------------------------------------------


class ResumableOptunaSweep(Sweeper):
    """The sweep loop: ask a batch of trials, launch them as Hydra jobs, tell their results."""

    def __init__(
        self, sampler, direction, storage, study_name, n_trials, n_jobs, max_failure_rate, params=None,
        heartbeat_interval=None, grace_period=None, pruner="none", pruner_settings=None,
    ) -> None:
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: must be between 0 and 1")
        self.pruner, self.pruner_settings = str(pruner), dict(pruner_settings or {})
        self.sampler = sampler
        self.directions = [str(direction)] if isinstance(direction, str) else [str(d) for d in direction]
        self.storage_url = str(storage) if storage else None
        self.study_name = study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), int(n_jobs), float(max_failure_rate)
        self.params = dict(params or {})
        self.heartbeat_interval, self.grace_period = seconds("heartbeat_interval", heartbeat_interval), seconds("grace_period", grace_period)
        check_pruning(self.pruner, self.pruner_settings, self.storage_url, len(self.directions))

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        search, fixed = search_space([f"{key}={value}" for key, value in self.params.items()] + list(arguments))
        sampler, n_trials = self.sampler, self.n_trials
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            grid = {name: grid_values(name, dist) for name, dist in search.items()}
            sampler = sampler(grid)
            n_trials = min(n_trials, math.prod(len(v) for v in grid.values()))
        storage = make_storage(self.storage_url, self.heartbeat_interval, self.grace_period)
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, sampler=sampler, directions=self.directions, load_if_exists=True,
            pruner=make_pruner(self.pruner, self.pruner_settings),
        )
        beats = Heartbeat(study, storage, self.heartbeat_interval) if isinstance(storage, optuna.storages.RDBStorage) and self.heartbeat_interval else None
        try:
            self.run_trials(study, search, fixed, n_trials, beats)
        finally:
            if beats:
                beats.stop()

    def run_trials(self, study: optuna.Study, search: dict, fixed: list[str], n_trials: int, beats: Heartbeat | None) -> None:
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        recover_interrupted_trials(study)
        if self.storage_url:
            # A seeded sampler restarts its random sequence in every process: on a persistent
            # study (resumed, or shared by workers that may start at the same moment) it would
            # propose the parameters other processes already tried.
            study.sampler.reseed_rng()
        log.info(f"study {study.study_name} in {self.storage_url or 'memory'}: {len(counted_trials(study))} of {n_trials} trials done or running")
        failures = 0
        while True:
            recover_interrupted_trials(study)
            remaining = n_trials - len(counted_trials(study))
            if remaining <= 0:
                if beats and self.others_running(study):
                    continue
                break
            trials = self.ask(study, min(self.n_jobs, remaining), search, n_trials, beats)
            if not trials:
                break
            numbers = [trial.number for trial in trials]
            overrides = [trial_overrides(trial, fixed) for trial in trials]
            returns = []
            for start, length in consecutive_runs(numbers):
                returns += self.launcher.launch(overrides[start : start + length], initial_job_idx=numbers[start])
            errors = [err for t, r in zip(trials, returns) if (err := tell_result(study, t, r, len(self.directions)))]
            if beats:
                beats.clear()
            failures += len(errors)
            write_best(study, sweep_dir, self.storage_url)
            if len(errors) / len(returns) > self.max_failure_rate:
                raise RuntimeError(f"{failures} failed trials (max_failure_rate={self.max_failure_rate}); last error: {errors[-1]}")
        best_path = write_best(study, sweep_dir, self.storage_url)
        if best_path:
            log.info(f"best trial {study.best_trial.number}: {study.best_trial.value} -> {best_path}")

    def others_running(self, study: optuna.Study) -> bool:
        """With the budget used: whether trials still run elsewhere (one whose worker dies is
        queued again, and this worker runs it); waits a poll interval if so."""
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return False
        numbers = [t.number for t in running]
        if numbers != getattr(self, "_waited_for", None):
            log.info(f"budget used; waiting for trial(s) {numbers} running in other workers, to run again any whose worker dies")
            self._waited_for = numbers
        time.sleep(min(WAIT_POLL_S, self.heartbeat_interval or WAIT_POLL_S))
        return True

    @staticmethod
    def ask(study: optuna.Study, count: int, search: dict[str, BaseDistribution], n_trials: int, beats: Heartbeat | None = None) -> list[optuna.Trial]:
        """Up to `count` new trials claimed by this worker; one past the budget is given back."""
        trials = []
        for _ in range(count):
            with quiet_heartbeat_warnings():
                trial = study.ask(search)
            if beats:
                beats.add(trial.number)
            trial.set_user_attr(WORKER_ATTR, this_worker())
            if beyond_budget(study, trial.number, n_trials):
                requeue(study, trial)
                log.info(f"trial {trial.number} is past the budget of {n_trials} (another worker asked at the same time); queued back")
                break
            trials.append(trial)
        return trials
