"""Stop cleanly on SIGTERM and Ctrl-C: a checkpoint at the next step boundary, then exit.

SIGTERM is what schedulers send before they preempt or kill a job; the first Ctrl-C (SIGINT)
is treated the same way, instead of a KeyboardInterrupt in the middle of a step. While training,
this callback's own handler only notes the signal; at the end of each training step all ranks
agree whether any of them got one (`reduce_boolean_decision`, free on one device) and, if so,
raise Lightning's `SIGTERMException` together and save `last.ckpt`. Lightning's own handler
raises on the rank that got the signal, at the end of whatever step that rank is in, and under
DDP the other ranks may already be in the next step: the run then hangs in a collective. A
re-run of the same command loses at most the step in flight. A second Ctrl-C interrupts at once.
"""

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("hylab")


class SaveOnPreemption(L.Callback):
    def __init__(self, dirpath: str, filename: str = "last.ckpt"):
        self.path = Path(dirpath) / filename
        self.pending = False  # a signal arrived; acted on at the end of the step
        self._previous: dict[int, object] = {}

    def _note_sigterm(self, signum, frame) -> None:
        self.pending = True

    def _note_sigint(self, signum, frame) -> None:
        log.warning("Ctrl-C: saving a checkpoint at the end of this step (press Ctrl-C again to abort at once)")
        signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT) or signal.default_int_handler)
        self.pending = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _in_main_thread():
            for signum, handler in ((signal.SIGTERM, self._note_sigterm), (signal.SIGINT, self._note_sigint)):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, handler)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.strategy.reduce_boolean_decision(self.pending, all=False):
            raise SIGTERMException

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
        if _in_main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
