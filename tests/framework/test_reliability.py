"""Kill it, run the same command again, lose nothing: through the real CLI.

Each fault is delivered for real (SIGKILL, SIGTERM) by a one-shot test callback that is left out
of the training hash, so the command run again is the same training, and each run that continues
one ends with the final metrics and weights of the uninterrupted run (the cells of the kill matrix
in docs/reliability.md; those run in one process are in test_kill_matrix.py)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from hylab.checkpoint_io import AtomicCheckpointIO, is_intact
from tests.framework.signals import signal_overrides
from tests.helpers import ROOT, run_cli, run_dirs, timeout_for

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
    same_metrics(finished, uninterrupted)  # the epoch goes on from the step it stopped at
    same_final_weights(finished, uninterrupted)


def test_a_killed_grid_sweep_run_again_skips_finished_jobs_and_resumes_the_killed_one(tmp_path, uninterrupted):
    # job 1 (seed 42) is the uninterrupted run's training
    sweep = ["-m", "seed=1,42", *SHORT_FIT, *signal_overrides(tmp_path / "fired", "SIGKILL", at_epoch_start=1,
                                                               job="${hydra:job.num}", fire_in_job=1)]
    assert run_cli(sweep, tmp_path / "logs", runs=2).returncode == -9
    assert len(completed(tmp_path / "logs")) == 1

    again = run_cli(sweep, tmp_path / "logs", runs=2)
    assert again.returncode == 0, again.stderr[-2000:]
    rerun = [r for r in completed(tmp_path / "logs") if r.get("reused_from") or r.get("resumed_from")]
    (reused,) = [r for r in rerun if r.get("reused_from")]
    (resumed,) = [r for r in rerun if r.get("resumed_from")]
    assert reused["seed"] == 1  # not trained again
    assert resumed["seed"] == 42 and resumed["progress"]["global_step"] == STEPS
    same_metrics(resumed, uninterrupted)
    same_final_weights(resumed, uninterrupted)


def test_an_optuna_trial_killed_mid_training_resumes_from_its_checkpoint(tmp_path, uninterrupted):
    # the searched values pinned to the experiment's own: every trial is the uninterrupted run's training
    pinned = ["model.optimizer.lr=0.003", "model.optimizer.weight_decay=0.05", "model.label_smoothing=choice(0.1)"]
    search = ["hparams_search=seresnet_optuna", "hydra.sweeper.n_trials=2", *pinned, *SHORT_FIT,
              *signal_overrides(tmp_path / "fired", "SIGKILL", at_step=4)]
    assert run_cli(search, tmp_path / "logs", runs=1).returncode == -9
    again = run_cli(search, tmp_path / "logs", runs=2)
    assert again.returncode == 0, again.stderr[-2000:]
    done = completed(tmp_path / "logs")
    assert len(done) == 2
    (retried,) = [r for r in done if r.get("resumed_from")]
    assert Path(retried["resumed_from"]).name == "trial_0"
    assert retried["progress"]["global_step"] == STEPS
    same_metrics(retried, uninterrupted)
    same_final_weights(retried, uninterrupted)


def test_a_store_training_dies_with_its_parent_and_the_next_request_resumes_it(tmp_path, uninterrupted):
    # the training kills the process that asked the store for it: it must not run on as an orphan
    ask = [sys.executable, "-m", "hylab.store_cli", "--log-dir", str(tmp_path), "get", "seresnet_digits", *SHORT_FIT,
           *signal_overrides(tmp_path / "fired", "SIGKILL", at_step=4, target="parent")]
    first = subprocess.run(ask, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(1))
    assert first.returncode == -9
    (stopped,) = records(tmp_path)  # it got SIGTERM with its parent's death: checkpoint, then stop
    assert stopped["status"] == "interrupted", first.stderr[-2000:]
    assert not process_alive(stopped["process"]["pid"])

    again = subprocess.run(ask, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(1))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming the unfinished run" in again.stderr + again.stdout
    entry = json.loads((Path(json.loads(again.stdout.strip().splitlines()[-1])["checkpoint"]).parent / "entry.json").read_text())
    same_metrics(entry, uninterrupted)


def process_alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's exit status waits for a reaper a container may lack)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


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
