"""An optuna sweeper for Hydra whose studies survive crashes and are shared by many workers.

It is hydra-optuna-sweeper's sweeper with a different `sweep` loop:

- The study lives in persistent storage (`sqlite:///<file>`, any SQLAlchemy URL, or
  `journal:<file>` for many workers on a shared file system); the folder is created.
- Re-running the same command resumes the study: the trial budget `n_trials` counts the
  trials already finished or running, so a finished study runs nothing more.
- Trials left RUNNING by a worker on this host that no longer exists (a killed sweep) are
  marked failed and their parameters queued again, so an interrupted trial is not lost.
  With `store.reuse=true` a retried trial whose run had in fact completed reuses it.
- Trials are numbered by the study, and each runs in `<sweep dir>/trial_<number>`, so workers
  sharing a study never write into one folder.
- A trial that raises or returns NaN is recorded as failed and the sweep goes on
  (`max_failure_rate` decides when too many failures stop it).
- After every batch the best trial's parameters are written to `<sweep dir>/best_overrides.yaml`;
  `python run.py ... overrides_file=<that file>` trains with them.
"""

import functools
import logging
import math
import os
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import optuna
import yaml
from hydra_plugins.hydra_optuna_sweeper._impl import (
    OptunaSweeperImpl,
    create_params_from_overrides,
)
from optuna.trial import TrialState

log = logging.getLogger("hylab.sweeper")

WORKER_ATTR = "hylab_worker"
# A worker records itself on a trial right after asking for it; a RUNNING trial still without a
# worker this long after it started lost its worker in between (killed at that moment).
UNCLAIMED_GRACE_S = 5.0
STALE_ATTR = "hylab_interrupted"
BEST_FILE = "best_overrides.yaml"


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


def make_storage(url: str | None):
    """An optuna storage from a URL; the folder of a SQLite or journal file is created."""
    if not url:
        return None
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
            return optuna.storages.RDBStorage(url)
    return optuna.storages.RDBStorage(url)


def unclaimed_for_long(trial) -> bool:
    if WORKER_ATTR in trial.user_attrs or trial.datetime_start is None:
        return False
    return (datetime.now() - trial.datetime_start).total_seconds() > UNCLAIMED_GRACE_S


def recover_interrupted_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials of dead local workers (or of none) and queue their parameters again."""
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not (worker_is_dead(trial.user_attrs.get(WORKER_ATTR)) or unclaimed_for_long(trial)):
            continue
        study._storage.set_trial_user_attr(trial._trial_id, STALE_ATTR, True)
        try:
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        log.warning(f"trial {trial.number} was interrupted ({trial.user_attrs.get(WORKER_ATTR)} is gone); queued again")
        recovered += 1
    return recovered


def counted_trials(study: optuna.Study) -> int:
    """Trials that use up the budget: finished or running, but not the interrupted ones we retry."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        or (t.state == TrialState.FAIL and not t.user_attrs.get(STALE_ATTR))
    )


def tell_result(study: optuna.Study, trial: optuna.Trial, job_return, n_objectives: int) -> Exception | None:
    """Record a job's result; an exception, a missing value or NaN makes the trial FAIL."""
    try:
        raw = job_return.return_value  # re-raises the job's exception
        values = [float(v) for v in (raw if n_objectives > 1 else [raw])]
        if len(values) != n_objectives or not all(math.isfinite(v) for v in values):
            raise ValueError(f"the run returned {raw!r}, not {n_objectives} finite value(s)")
    except Exception as err:  # any failure of the job is a failed trial, not a failed sweep
        _tell(study, trial, state=TrialState.FAIL)
        log.warning(f"trial {trial.number} failed: {type(err).__name__}: {err}")
        return err
    _tell(study, trial, values=values)
    return None


def _tell(study: optuna.Study, trial: optuna.Trial, **result) -> None:
    try:
        study.tell(trial, **result)
    except RuntimeError as err:
        # GridSampler calls study.stop() once the grid is exhausted, which optuna refuses outside
        # study.optimize; the trial is recorded by then and the budget ends the loop.
        if "Study.stop" not in str(err):
            raise


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
        "overrides": [f"{name}={value}" for name, value in best.params.items()],
    }
    path = sweep_dir / BEST_FILE
    from hylab.records import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(content, sort_keys=False))
    return path


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def sweep(self, arguments: list[str]) -> None:
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        search = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            search.pop(name, None)
        sampler = self.sampler
        if isinstance(sampler, functools.partial) and sampler.func is optuna.samplers.GridSampler:
            grid = {name: self._to_grid_sampler_choices(dist) for name, dist in search.items()}
            sampler = sampler(grid)
            self.n_trials = min(self.n_trials, math.prod(len(v) for v in grid.values()))
        storage_url = str(self.storage) if self.storage else None
        study = optuna.create_study(
            study_name=self.study_name, storage=make_storage(storage_url), sampler=sampler,
            directions=self._get_directions(), load_if_exists=True,
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        recover_interrupted_trials(study)
        if study.get_trials(deepcopy=False):
            # A seeded sampler restarts its random sequence in every process: on a resumed or
            # shared study it would propose the first trials' parameters again.
            study.sampler.reseed_rng()
        already = counted_trials(study)
        log.info(f"study {study.study_name} in {storage_url or 'memory'}: {already} of {self.n_trials} trials done or running")
        failures = 0
        while (remaining := self.n_trials - counted_trials(study)) > 0:
            trials = [study.ask() for _ in range(min(self.n_jobs, remaining))]
            for trial in trials:
                trial.set_user_attr(WORKER_ATTR, this_worker())
            overrides = self._configure_trials(trials, search, fixed)
            numbers = [trial.number for trial in trials]
            returns = []
            for start, length in consecutive_runs(numbers):
                returns += self.launcher.launch(overrides[start : start + length], initial_job_idx=numbers[start])
            batch_failures = [tell_result(study, t, r, len(study.directions)) for t, r in zip(trials, returns)]
            failures += sum(err is not None for err in batch_failures)
            write_best(study, sweep_dir, storage_url)
            if sum(err is not None for err in batch_failures) / len(returns) > self.max_failure_rate:
                raise RuntimeError(f"{failures} failed trials (max_failure_rate={self.max_failure_rate}); last error: {[e for e in batch_failures if e][-1]}")
        best_path = write_best(study, sweep_dir, storage_url)
        if best_path:
            log.info(f"best trial {study.best_trial.number}: {study.best_trial.value} -> {best_path}")
