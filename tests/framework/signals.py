"""Test callbacks that stop their own run at a chosen point, once.

They are added from the command line with `_training_: false`, so the run they interrupt has the
same training hash as the command run again without them (or with them, since they fire once:
a marker file remembers that they did).

A real signal (SIGKILL, SIGTERM, SIGINT) is sent to the process itself, or to its parent
(`target=parent`); `crash` raises `Crashed` instead, which is how a test running the run in its
own process stands in for SIGKILL: nothing is saved, the checkpoints on disk are what a SIGKILL
would have left, and the record says `failed` (resumed like `running`)."""

import os
import signal
from pathlib import Path

import lightning as L


class Crashed(BaseException):
    """The process died here (in-process stand-in for SIGKILL)."""


class SignalOnce(L.Callback):
    def __init__(self, marker: str, signal_name: str = "SIGKILL", at_epoch_start: int | None = None, at_step: int | None = None,
                 at_validation_epoch: int | None = None, at_test: bool = False, target: str = "self",
                 rank: int | None = None, job: int | None = None, fire_in_job: int | None = None):
        self.armed = fire_in_job is None or job == fire_in_job
        self.marker = Path(marker)
        self.signal_name = signal_name
        self.at_epoch_start = at_epoch_start
        self.at_step = at_step
        self.at_validation_epoch = at_validation_epoch
        self.at_test = at_test
        self.target = target
        self.rank = rank  # fire on this global rank only (DDP)

    def _fire(self, trainer: L.Trainer) -> None:
        if not self.armed or self.marker.exists() or self.rank not in (None, trainer.global_rank):
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))
        if self.signal_name == "crash":
            raise Crashed(f"killed at {self.marker.name}")
        os.kill(os.getppid() if self.target == "parent" else os.getpid(), getattr(signal, self.signal_name))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_epoch_start is not None and trainer.current_epoch == self.at_epoch_start:
            self._fire(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.at_step is not None and trainer.global_step == self.at_step:
            self._fire(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self.at_validation_epoch is not None and not trainer.sanity_checking and trainer.current_epoch == self.at_validation_epoch:
            self._fire(trainer)

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.at_test:
            self._fire(trainer)


def signal_overrides(marker: Path, signal_name: str, name: str = "signal_once", **when) -> list[str]:
    """Command-line overrides that add SignalOnce to a run (`name`: several can be added)."""
    node = f"+callbacks.{name}"
    args = [f"{node}._target_=tests.framework.signals.SignalOnce", f"{node}._training_=false",
            f"{node}.marker={marker}", f"{node}.signal_name={signal_name}"]
    return args + [f"{node}.{key}={value}" for key, value in when.items()]
