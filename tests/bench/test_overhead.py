"""The overhead benches run the recipes users run, also those without an lr schedule."""

from pathlib import Path

import pytest
import torch

from bench.overhead import compose_run, step_schedulers
from bench.overhead_steps import hylab_run, plain_run, train_steps_per_epoch

DIGITS = ["trainer.max_epochs=2", "test_after_fit=false", "store.register_runs=false", "data.batch_size=256", "model/net=mlp"]


def test_a_constant_lr_has_no_scheduler_and_a_warm_up_has_one(tmp_path):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    constant = compose_run("seresnet_digits", ["model/scheduler=none", "model.scheduler.warmup_epochs=0"], tmp_path / "a").model.scheduler
    assert step_schedulers(constant, optimizer, total_steps=10, steps_per_epoch=5) == []
    warm = compose_run("seresnet_digits", ["model/scheduler=none", "model.scheduler.warmup_epochs=1"], tmp_path / "b").model.scheduler
    [scheduler] = step_schedulers(warm, optimizer, total_steps=10, steps_per_epoch=5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 5)  # warm-up: (t + 1) / 5 at t = 0


def test_plain_and_hylab_loops_time_every_step_of_a_recipe_without_schedule(tmp_path: Path):
    overrides = [*DIGITS, "model/scheduler=none", "model.scheduler.warmup_epochs=0"]
    batches = train_steps_per_epoch("seresnet_digits", overrides)
    epochs, steps = plain_run("seresnet_digits", overrides, tmp_path / "plain")
    assert len(epochs) == 2 and [len(s) for s in steps] == [batches, batches]
    assert all(wall > 0 and cpu > 0 and images > 0 for wall, cpu, images in epochs)
    epochs, steps = hylab_run("seresnet_digits", overrides, tmp_path / "hylab")
    assert len(epochs) == 2 and [len(s) for s in steps] == [batches - 1] * 2  # from one step's start to the next
