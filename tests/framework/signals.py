"""Test callbacks that deliver a real signal to their own run at a chosen point, once.

They are added from the command line with `_training_: false`, so the run they interrupt has the
same training hash as the command run again without them (or with them, since they fire once:
a marker file remembers that they did)."""

import os
import signal
from pathlib import Path

import lightning as L


class SignalOnce(L.Callback):
    def __init__(self, marker: str, signal_name: str = "SIGKILL", at_epoch_start: int | None = None, at_step: int | None = None,
                 job: int | None = None, fire_in_job: int | None = None):
        self.armed = fire_in_job is None or job == fire_in_job
        self.marker = Path(marker)
        self.signum = getattr(signal, signal_name)
        self.at_epoch_start = at_epoch_start
        self.at_step = at_step

    def _fire(self) -> None:
        if not self.armed or self.marker.exists():
            return
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), self.signum)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.at_epoch_start is not None and trainer.current_epoch == self.at_epoch_start:
            self._fire()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.at_step is not None and trainer.global_step == self.at_step:
            self._fire()


def signal_overrides(marker: Path, signal_name: str, **when) -> list[str]:
    """Command-line overrides that add SignalOnce to a run."""
    args = ["+callbacks.signal_once._target_=tests.framework.signals.SignalOnce", "+callbacks.signal_once._training_=false",
            f"+callbacks.signal_once.marker={marker}", f"+callbacks.signal_once.signal_name={signal_name}"]
    return args + [f"+callbacks.signal_once.{key}={value}" for key, value in when.items()]
