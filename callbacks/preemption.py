"""Stop cleanly on SIGTERM and Ctrl-C: a checkpoint at the next step boundary, then exit.

SIGTERM is what schedulers send before they preempt or kill a job. Lightning (2.6) already
turns it into a `SIGTERMException` at the next step boundary; this callback routes the first
Ctrl-C (SIGINT) the same way, instead of a KeyboardInterrupt in the middle of a step, and saves
`last.ckpt` when that exception arrives, so a re-run of the same command loses at most the step
in flight. A second Ctrl-C interrupts at once.
"""

import logging
import os
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("hylab")


class SaveOnPreemption(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self._previous_sigint = None

    def _forward_sigint(self, signum, frame) -> None:
        log.warning("Ctrl-C: saving a checkpoint at the end of this step (press Ctrl-C again to abort at once)")
        signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and _in_main_thread():
            self._previous_sigint = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._forward_sigint)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore()
        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path)
        if trainer.is_global_zero:
            log.warning(f"stopped by a signal at global step {trainer.global_step}; saved {self.path}. "
                        "Run the same command again to resume from it")

    def _restore(self) -> None:
        if self._previous_sigint is not None and _in_main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
