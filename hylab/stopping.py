"""Why a fit stopped before its epoch budget, in words for the run record (`stopped`).

- `pruned at epoch k`: the search's pruner stopped the trial after k epochs (callbacks/pruning.py);
- `time budget`: `trainer.max_time` ran out (Lightning's own Timer callback stops the run).

Imports lightning: used by the Trainer tasks only.
"""

import lightning as L
from lightning.pytorch.callbacks import Timer

from callbacks.pruning import OptunaPruning


def stop_reason(trainer: L.Trainer) -> str | None:
    pruning = next((c for c in trainer.callbacks if isinstance(c, OptunaPruning)), None)
    if pruning is not None and pruning.pruned_at_epoch is not None:
        return f"pruned at epoch {pruning.pruned_at_epoch}"
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    if timer is not None and timer.time_remaining() is not None and timer.time_remaining() <= 0:
        return "time budget"
    return None


def stopped(trainer: L.Trainer) -> dict:
    """{"stopped": reason} for the run record, or {} for a run that used its whole budget."""
    reason = stop_reason(trainer)
    return {"stopped": reason} if reason else {}
