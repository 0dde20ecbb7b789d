"""Dead workers noticed from any host: optuna's heartbeat on an RDB storage.

A worker records a heartbeat for each trial it runs every `heartbeat_interval` seconds (optuna's
`RDBStorage.record_heartbeat`); a trial whose last heartbeat is older than `grace_period` belongs
to a worker that is gone (SIGKILL, a lost node), wherever it ran. Any worker of the study then
fails it (`optuna.storages.fail_stale_trials`) and optuna's `RetryHeartbeatStaleTrialCallback`
queues its parameters again as a WAITING trial, which the next `study.ask` hands out.

Optuna beats only inside `Study.optimize`; the sweeper asks and tells trials itself (a Hydra
launcher runs them), so it beats from this small thread instead.
"""

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterable

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback, fail_stale_trials

log = logging.getLogger("hylab.sweeper")

# A trial whose worker dies this many times in a row (a run that kills its own node) is left FAIL.
MAX_RETRY = 3
# How often a worker whose budget is used checks the trials still running elsewhere, at most.
WAIT_POLL_S = 5.0


@contextlib.contextmanager
def quiet_heartbeat_warnings():
    """optuna marks heartbeats experimental and warns that they belong to Study.optimize: we use
    them on purpose, from our own ask/tell loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def seconds(key: str, value) -> int | None:
    """A whole positive number of seconds (optuna's heartbeat takes no other), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"hydra.sweeper.{key}={value}: must be a whole number of seconds above 0, or null")
    return value


def rdb_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> optuna.storages.RDBStorage:
    """An RDBStorage whose stale trials are failed and queued again (no heartbeat without an interval)."""
    if not heartbeat_interval:
        return optuna.storages.RDBStorage(url)
    with quiet_heartbeat_warnings():
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=int(heartbeat_interval), grace_period=int(grace_period) if grace_period else None,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )


def fail_stale(study: optuna.Study) -> None:
    """Fail the trials whose heartbeat stopped (any host) and queue each again."""
    with quiet_heartbeat_warnings():
        fail_stale_trials(study)


def replaced_trials(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the stale trials that optuna queued again (each retry names its history)."""
    with quiet_heartbeat_warnings():
        return {number for t in trials for number in RetryHeartbeatStaleTrialCallback.retry_history(t)}


class Heartbeat:
    """Beats for the trials this worker runs, every `interval` seconds, in a daemon thread."""

    def __init__(self, study: optuna.Study, storage, interval: int) -> None:
        self.storage, self.interval = storage, interval
        self.study_id = storage.get_study_id_from_name(study.study_name)
        self.trial_ids: set[int] = set()
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self.thread.start()

    def add(self, number: int) -> None:
        """Beat once now (before the trial is claimed anywhere else) and from then on."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.record_heartbeat(trial_id)
        with self.lock:
            self.trial_ids.add(trial_id)

    def clear(self) -> None:
        with self.lock:
            self.trial_ids.clear()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            with self.lock:
                trial_ids = list(self.trial_ids)
            for trial_id in trial_ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # a lost connection: the next beat tries again
                    log.warning(f"heartbeat not recorded: {type(err).__name__}: {err}")
