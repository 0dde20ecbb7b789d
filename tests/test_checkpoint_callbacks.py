"""The checkpoint callbacks' contract: last.ckpt is the latest state, and callbacks=swa saves the average."""

import torch

from tests.helpers import run_in_process

QUIET = ["debug=limit", "callbacks.progress_bar=null", "test_after_fit=false"]


def test_last_checkpoint_follows_every_epoch_even_without_improvement(tmp_path):
    # lr=0: the weights never change, so val/acc never improves after the first epoch
    _, record = run_in_process([*QUIET, "trainer.max_epochs=3", "model.optimizer.lr=0.0", "model.scheduler.warmup_epochs=0"], tmp_path / "run")
    assert torch.load(record["checkpoints"]["last"], weights_only=True)["epoch"] == 2
    assert torch.load(record["checkpoints"]["best"], weights_only=True)["epoch"] == 0


def test_last_checkpoint_holds_the_swa_average_after_the_batchnorm_pass(tmp_path):
    _, record = run_in_process([*QUIET, "callbacks=swa", "trainer.max_epochs=4"], tmp_path / "run")
    checkpoint = torch.load(record["checkpoints"]["last"], weights_only=True)
    assert checkpoint["epoch"] == 4  # saved during the extra epoch (4 training epochs + the BatchNorm pass)
    tracked = [v for k, v in checkpoint["state_dict"].items() if k.endswith("num_batches_tracked")]
    assert tracked and all(int(v) == 3 for v in tracked)  # statistics reset, then one pass of 3 batches
