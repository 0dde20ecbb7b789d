"""The checkpoint callbacks' contract: last.ckpt is the latest state (epoch- and step-based runs),
it resumes, and callbacks=swa saves the average."""

import csv

import torch

from tests.helpers import run_in_process

QUIET = ["debug=limit", "callbacks.progress_bar=null", "test_after_fit=false"]
# lr=0: the weights never change, so the monitored val/acc never improves after the first validation
FROZEN = ["model.optimizer.lr=0.0", "model.scheduler.warmup_epochs=0"]


def _load(path):
    return torch.load(path, weights_only=True)


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    _, record = run_in_process([*QUIET, *FROZEN, "trainer.max_epochs=3"], tmp_path / "run")
    assert record["checkpoints"]["last"].endswith("checkpoints/last.ckpt")
    assert _load(record["checkpoints"]["last"])["epoch"] == 2
    assert _load(record["checkpoints"]["best"])["epoch"] == 0
    assert record["checkpoints"]["best"] != record["checkpoints"]["last"]


def test_step_based_run_writes_last_checkpoint_at_every_validation(tmp_path):
    # as the GPT experiments run: no epoch limit, validation every N optimizer steps
    steps = ["trainer.max_epochs=-1", "+trainer.max_steps=7", "+trainer.val_check_interval=2", "trainer.check_val_every_n_epoch=null"]
    _, record = run_in_process([*QUIET, *FROZEN, *steps], tmp_path / "run")
    assert _load(record["checkpoints"]["last"])["global_step"] == 6  # the last validation (steps 2, 4, 6)
    assert _load(record["checkpoints"]["best"])["global_step"] == 2


def test_resuming_from_last_checkpoint_continues_the_run(tmp_path):
    _, first = run_in_process([*QUIET, "trainer.max_epochs=2"], tmp_path / "first")
    last = first["checkpoints"]["last"]
    _, resumed = run_in_process([*QUIET, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "resumed")
    assert first["progress"] == {"global_step": 6, "epochs_completed": 2}
    assert resumed["progress"] == {"global_step": 9, "epochs_completed": 3}  # one more epoch of 3 batches
    assert _load(resumed["checkpoints"]["last"])["epoch"] == 2


def test_last_checkpoint_holds_the_swa_average_after_the_batchnorm_pass(tmp_path):
    _, record = run_in_process([*QUIET, "callbacks=swa", "trainer.max_epochs=4"], tmp_path / "run")
    checkpoint = _load(record["checkpoints"]["last"])
    assert checkpoint["epoch"] == 4  # saved during the extra epoch (4 training epochs + the BatchNorm pass)
    tracked = [v for k, v in checkpoint["state_dict"].items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 3 for v in tracked)  # statistics reset, then one pass of 3 batches
    # the average is validated, and it is the best checkpoint exactly when it scores best
    (log,) = (tmp_path / "run").rglob("metrics.csv")
    scores = {int(row["epoch"]): float(row["val/acc"]) for row in csv.DictReader(log.open()) if row.get("val/acc")}
    assert sorted(scores) == [0, 1, 2, 3, 4]
    best_epoch = _load(record["checkpoints"]["best"])["epoch"]
    assert scores[best_epoch] == max(scores.values())
    assert (best_epoch == 4) == (scores[4] > max(scores[e] for e in range(4)))
