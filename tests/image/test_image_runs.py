"""The image-classification family end to end through the same config path run.py uses."""

import csv
import math
from pathlib import Path

import pytest
import torch

from bench.gpu_rows import fmnist_overrides
from datamodules.image.sources import DEBIAN_FASHION_MNIST
from hylab.errors import UserError
from tests.helpers import run_in_process
from tests.image.test_image_data import write_cifar_layout, write_mnist_layout

LIMIT = ["debug=limit", "callbacks.progress_bar=null"]


def epochs_logged(run_dir: Path, column: str) -> list[int]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return sorted({int(row["epoch"]) for row in csv.DictReader(handle) if row.get(column)})


@pytest.mark.parametrize("experiment", ["seresnet_digits", "seresnet_mnist5k", "seresnet_fmnist", "seresnet_cifar10", "speednet_mnist5k", "fmnist_speed", "mlp_fmnist"])
def test_experiment_fast_dev_run(experiment, tmp_path):
    overrides = [f"experiment={experiment}", "debug=fdr"]
    if "fmnist" in experiment and not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    if experiment == "seresnet_cifar10":
        # CIFAR-10 is not available offline: the run reads small files written in its real layout.
        write_cifar_layout(tmp_path / "data", per_batch=40)
        overrides += [f"data.data_dir={tmp_path / 'data'}", "data.num_workers=0", "data.batch_size=16"]
    value, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and record["experiment"] == experiment
    assert math.isfinite(record["metrics"]["test/loss"]) and value == record["metrics"]["val/acc_best"]
    assert len([name for name in record["metrics"] if name.startswith("test/acc_class/")]) == 10


def test_fit_writes_a_complete_run_dir(tmp_path):
    value, record = run_in_process(LIMIT, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert record["status"] == "completed" and record["task_name"] == "debug"
    assert value == pytest.approx(record["metrics"]["val/acc_best"])
    assert {"test/acc", "val/acc", "val/acc_best", "train/loss", "test/loss"} <= set(record["metrics"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and Path(record["checkpoints"]["best"]).is_file()
    assert (run_dir / "config_tree.log").is_file() and (run_dir / "plots" / "test_confusion_matrix.png").is_file()
    assert epochs_logged(run_dir, "val/acc") == [0, 1]
    assert "test/acc_class/9" in record["metrics"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hylab"]["config"]["model"]["net"]["_target_"].endswith("seresnet_mnist")


def test_resume_from_last_checkpoint_continues_at_the_right_epoch(tmp_path):
    _, first = run_in_process(LIMIT, tmp_path / "first")
    last = first["checkpoints"]["last"]
    _, resumed = run_in_process([*LIMIT, "trainer.max_epochs=4", f"ckpt_path={last}"], tmp_path / "resumed")
    assert epochs_logged(tmp_path / "resumed", "val/acc") == [2, 3]
    state = torch.load(resumed["checkpoints"]["last"], weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 4 * 3  # 3 batches per epoch, 4 epochs
    assert Path(last).is_file()  # the first run's files are untouched


def test_task_test_reproduces_the_train_time_test_metric(tmp_path):
    _, trained = run_in_process(LIMIT, tmp_path / "train")
    best = trained["checkpoints"]["best"]
    _, tested = run_in_process([*LIMIT, "task=test", f"ckpt_path={best}"], tmp_path / "test")
    assert tested["metrics"]["test/acc"] == pytest.approx(trained["metrics"]["test/acc"], abs=1e-7)
    assert tested["metrics"]["test/loss"] == pytest.approx(trained["metrics"]["test/loss"], rel=1e-6)
    _, validated = run_in_process([*LIMIT, "task=validate", f"ckpt_path={best}"], tmp_path / "validate")
    assert validated["metrics"]["val/acc"] == pytest.approx(trained["checkpoints"]["best_score"], abs=1e-7)
    _, predicted = run_in_process([*LIMIT, "task=predict", f"ckpt_path={best}"], tmp_path / "predict")
    predictions = torch.load(predicted["predictions"])
    assert predictions["probs"].shape[1] == 10 and len(predictions["pred"]) == len(predictions["label"])
    # limit_predict_batches is unset, so predict sees the whole test split, test only two batches
    assert predicted["metrics"]["predict/acc"] > 0


def test_ema_runs_test_the_averaged_weights_after_fit_and_from_the_checkpoint(tmp_path):
    ema = [*LIMIT, "callbacks=ema", "callbacks.ema.decay=0.5", "trainer.max_epochs=3"]
    _, trained = run_in_process(ema, tmp_path / "train")
    best = trained["checkpoints"]["best"]
    state = torch.load(best, weights_only=True)
    assert "current_model_state" in state  # the training weights; state_dict holds the average
    _, tested = run_in_process([*ema, "task=test", f"ckpt_path={best}"], tmp_path / "test")
    # the test after fit scored the averaged weights that validation chose, as task=test does
    assert tested["metrics"]["test/loss"] == pytest.approx(trained["metrics"]["test/loss"], rel=1e-6)


@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit", "profiler"])
def test_debug_configs(debug, tmp_path):
    overrides = [f"debug={debug}", "callbacks.progress_bar=null"]
    if debug == "overfit":
        overrides += ["trainer.max_epochs=30", "model.optimizer.lr=3e-3", "model.label_smoothing=0.0"]
    _, record = run_in_process(overrides, tmp_path / "run")
    run_dir = tmp_path / "run"
    assert record["status"] == "completed"
    if debug == "fdr":
        assert record["progress"]["global_step"] == 1  # one training batch
    if debug == "overfit":
        with open(run_dir / "csv" / "metrics.csv") as handle:
            losses = [float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")]
        assert losses[-1] < 0.1 * losses[0]
    if debug == "limit":
        assert record["progress"] == {"global_step": 6, "epochs_completed": 2}
    if debug == "profiler":
        assert list(run_dir.glob("*profile*.txt"))


@pytest.mark.parametrize("callbacks", ["ema", "swa", "none"])
def test_callback_sets(callbacks, tmp_path):
    overrides = ["debug=limit", f"callbacks={callbacks}", "trainer.max_epochs=4"]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed" and "test/acc" in record["metrics"]
    assert bool(record["checkpoints"]) == (callbacks != "none")


def test_tensorboard_logger_and_missing_logger_package(tmp_path, monkeypatch):
    _, record = run_in_process([*LIMIT, "logger=many"], tmp_path / "run")
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()
    import importlib.util

    # CI installs the wandb extra: the check is shown a machine without it
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "wandb" else find_spec(name, *args))
    with pytest.raises(UserError, match=r"uv sync --extra wandb"):
        run_in_process([*LIMIT, "logger=wandb"], tmp_path / "wandb")


def test_bad_checkpoints_are_rejected_before_training(tmp_path):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        run_in_process([*LIMIT, f"ckpt_path={corrupt}"], tmp_path / "run")
    with pytest.raises(UserError, match="evaluates a checkpoint"):
        run_in_process([*LIMIT, "task=test"], tmp_path / "run2")


def test_mnist_layout_under_data_dir(tmp_path):
    write_mnist_layout(tmp_path / "data", n_train=200, n_test=40)
    overrides = ["experiment=seresnet_mnist5k", "data=mnist", f"data.data_dir={tmp_path / 'data'}", "debug=fdr"]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed"


@pytest.mark.slow
def test_a_short_run_learns_the_digits(tmp_path):
    """Two epochs on the 8x8 digits (about 40 steps) get far above chance (0.1): a broken loss,
    label pipeline or optimizer wiring would not."""
    overrides = ["experiment=seresnet_digits", "trainer.max_epochs=2", "model.scheduler.warmup_epochs=0", *LIMIT[1:]]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["metrics"]["test/acc"] > 0.5
    assert record["metrics"]["val/acc_best"] > 0.5


@pytest.mark.gpu
def test_fmnist_speed_on_gpu_reaches_its_accuracy(tmp_path):
    carried = fmnist_overrides()  # the copy scripts/gpu_prepare.sh makes for machines without a network
    if not carried and not DEBIAN_FASHION_MNIST.is_dir():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    _, record = run_in_process(["experiment=fmnist_speed", "hardware=gpu", "callbacks.progress_bar=null", *carried], tmp_path / "run")
    print(f"fmnist_speed hardware=gpu: test/acc {record['metrics']['test/acc']:.4f} in {record['wall_time_s']:.1f} s (run, compile included)")
    assert record["metrics"]["test/acc"] >= 0.93
