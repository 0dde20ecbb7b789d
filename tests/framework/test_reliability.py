"""Kill it, run the same command again, lose nothing: through the real CLI.

Each fault is delivered for real (SIGKILL, SIGTERM) by a one-shot test callback that is left out
of the training hash, so the command run again is the same training."""

import json
import zipfile
from pathlib import Path

import pytest
import torch

from hylab.checkpoint_io import AtomicCheckpointIO, is_intact
from tests.framework.signals import signal_overrides
from tests.helpers import run_cli, run_dirs

pytestmark = pytest.mark.slow

SHORT_FIT = ["debug=limit", "trainer.max_epochs=3", "callbacks.progress_bar=null", "logger=csv"]
STEPS = 3 * 3  # debug=limit: 3 training batches per epoch


def records(log_dir: Path) -> list[dict]:
    return [json.loads((d / "metrics.json").read_text()) for d in run_dirs(log_dir)]


def completed(log_dir: Path) -> list[dict]:
    return [r for r in records(log_dir) if r["status"] == "completed"]


def same_final_weights(a: dict, b: dict) -> None:
    weights = [torch.load(r["checkpoints"]["last"], map_location="cpu", weights_only=True)["state_dict"] for r in (a, b)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def same_metrics(a: dict, b: dict) -> None:
    for name in ("test/acc", "test/loss", "val/acc_best", "val/loss"):
        assert a["metrics"][name] == pytest.approx(b["metrics"][name], rel=1e-6, abs=1e-7), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    log_dir = tmp_path_factory.mktemp("uninterrupted")
    done = run_cli(SHORT_FIT, log_dir)
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = completed(log_dir)
    assert record["progress"]["global_step"] == STEPS
    return record


def test_sigkill_after_the_first_checkpoint_then_the_same_command_finishes_as_if_uninterrupted(tmp_path, uninterrupted):
    kill = signal_overrides(tmp_path / "fired", "SIGKILL", at_epoch_start=1)
    first = run_cli(SHORT_FIT + kill, tmp_path / "logs")
    assert first.returncode == -9
    (killed,) = records(tmp_path / "logs")
    assert killed["status"] == "running"  # written at start; the kill left it so

    again = run_cli(SHORT_FIT + kill, tmp_path / "logs")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the unfinished run" in again.stderr + again.stdout
    (finished,) = completed(tmp_path / "logs")
    assert Path(finished["resumed_from"]).name == killed["run_id"]
    assert finished["progress"]["global_step"] == uninterrupted["progress"]["global_step"]
    same_metrics(finished, uninterrupted)
    same_final_weights(finished, uninterrupted)
    assert json.loads((Path(finished["resumed_from"]) / "metrics.json").read_text())["status"] == "resumed"


def test_a_truncated_last_checkpoint_is_skipped_for_the_previous_intact_one(tmp_path, uninterrupted):
    kill = signal_overrides(tmp_path / "fired", "SIGKILL", at_epoch_start=2)
    assert run_cli(SHORT_FIT + kill, tmp_path / "logs").returncode == -9
    (killed_dir,) = run_dirs(tmp_path / "logs")
    last = killed_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a write cut short
    assert not is_intact(last)

    again = run_cli(SHORT_FIT + kill, tmp_path / "logs")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "last.ckpt is truncated or corrupt; resuming from epoch_" in again.stderr + again.stdout
    (finished,) = completed(tmp_path / "logs")
    assert finished["progress"]["global_step"] == uninterrupted["progress"]["global_step"]
    # The training replays exactly; which checkpoint counts as best may not: a top-k checkpoint
    # holds the checkpoint callback's state from just before it was itself ranked.
    same_final_weights(finished, uninterrupted)


def test_sigterm_mid_epoch_checkpoints_at_the_step_exits_and_resumes(tmp_path, uninterrupted):
    stop = signal_overrides(tmp_path / "fired", "SIGTERM", at_step=4)  # step 4 of 9: inside epoch 2
    first = run_cli(SHORT_FIT + stop, tmp_path / "logs")
    assert first.returncode == 143, first.stderr[-2000:]
    assert "stopped by a signal after saving checkpoints/last.ckpt" in first.stderr
    (stopped_dir,) = run_dirs(tmp_path / "logs")
    assert json.loads((stopped_dir / "metrics.json").read_text())["status"] == "interrupted"
    saved = torch.load(stopped_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4  # at most the step in flight is lost: none here

    again = run_cli(SHORT_FIT + stop, tmp_path / "logs")
    assert again.returncode == 0, again.stderr[-2000:]
    (finished,) = completed(tmp_path / "logs")
    assert finished["progress"]["global_step"] == STEPS
    assert Path(finished["resumed_from"]) == stopped_dir


def test_a_killed_grid_sweep_run_again_skips_finished_jobs_and_resumes_the_killed_one(tmp_path):
    sweep = ["-m", "seed=1,2,3", *SHORT_FIT, *signal_overrides(tmp_path / "fired", "SIGKILL", at_epoch_start=1,
                                                                 job="${hydra:job.num}", fire_in_job=2)]
    assert run_cli(sweep, tmp_path / "logs").returncode == -9
    assert len(completed(tmp_path / "logs")) == 2

    again = run_cli(sweep, tmp_path / "logs", runs=3)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = [r for r in completed(tmp_path / "logs") if r.get("reused_from") or r.get("resumed_from")]
    reused = [r for r in rerun if r.get("reused_from")]
    resumed = [r for r in rerun if r.get("resumed_from")]
    assert len(reused) == 2 and {r["seed"] for r in reused} == {1, 2}  # not trained again
    assert len(resumed) == 1 and resumed[0]["seed"] == 3
    assert resumed[0]["progress"]["global_step"] == STEPS


def test_an_optuna_trial_killed_mid_training_resumes_from_its_checkpoint(tmp_path):
    search = ["hparams_search=seresnet_optuna", "hydra.sweeper.n_trials=2", *SHORT_FIT,
              *signal_overrides(tmp_path / "fired", "SIGKILL", at_epoch_start=1)]
    assert run_cli(search, tmp_path / "logs").returncode == -9
    again = run_cli(search, tmp_path / "logs", runs=3)
    assert again.returncode == 0, again.stderr[-2000:]
    done = completed(tmp_path / "logs")
    assert len(done) == 2
    (retried,) = [r for r in done if r.get("resumed_from")]
    assert Path(retried["resumed_from"]).name == "trial_0"
    assert retried["progress"]["global_step"] == STEPS


def test_a_checkpoint_write_cut_short_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "weights": torch.ones(1000)}, path)

    def dies_halfway(io_self, checkpoint, target, *args, **kwargs):
        Path(target).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # the process is stopped in the middle of the write

    from lightning.pytorch.plugins.io import TorchCheckpointIO

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    assert is_intact(path) and zipfile.is_zipfile(path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert not list(tmp_path.glob(".last.ckpt.*.tmp"))
