"""Lightning's RichProgressBar, drawn 10 times a second instead of 100, and moved at most every
`min_interval` seconds instead of after every batch.

RichProgressBar draws the bar from a thread of the training process `refresh_rate` times a second
(100 by default), and hands it its position and the progress-bar metrics
(`trainer.progress_bar_metrics`, gathered anew each time) after every batch. Both cost the
training loop: the drawing thread takes the interpreter lock and CPU time in proportion to wall
time (the slower the machine, the more draws per step), the bookkeeping in proportion to steps;
on a net whose step takes a few milliseconds that is several percent of the step
(bench/overhead_steps.py, docs/RESULTS.md). Here the bar is drawn 10 times a second, and a batch's
update runs only when `min_interval` seconds have passed since the last one (tqdm's
`mininterval`, 0.1 s by default) and always at the last batch of a loop, so the bar still moves
ten times a second and ends at its total.
"""

import time

from lightning.pytorch.callbacks import RichProgressBar


class ProgressBar(RichProgressBar):
    def __init__(self, min_interval: float = 0.1, refresh_rate: int = 10, **kwargs):
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.min_interval = min_interval
        self._last_update = float("-inf")

    def _due(self, batch_idx: int, total) -> bool:
        """Whether to update now: the interval has passed, or this is the loop's last batch."""
        now = time.monotonic()
        if now - self._last_update >= self.min_interval or batch_idx + 1 >= total:
            self._last_update = now
            return True
        return False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._due(batch_idx, trainer.num_training_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        totals = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
        if self._due(batch_idx, _total(totals, dataloader_idx)):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self._due(batch_idx, _total(trainer.num_test_batches, dataloader_idx)):
            super().on_test_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)


def _total(totals, dataloader_idx: int) -> float:
    """The batch count of one loader of an evaluation loop (a list per loader); 0 when unknown."""
    return totals[dataloader_idx] if dataloader_idx < len(totals) else 0
