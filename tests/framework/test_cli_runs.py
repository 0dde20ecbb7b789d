"""run.py as users type it: sweeps, DDP with subprocess launch, errors at the shell."""

import json

import pytest
import yaml

from tests.framework.signals import signal_overrides
from tests.framework.test_reliability import same_final_weights, same_metrics
from tests.helpers import run_cli, run_dirs

QUIET = ["debug=limit", "callbacks.progress_bar=null"]


@pytest.mark.slow
def test_grid_sweep_from_the_shell(tmp_path):
    done = run_cli(["-m", *QUIET, "model.optimizer.lr=1e-3,3e-3"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert [d.name for d in dirs] == ["0", "1"] and dirs[0].parent.parent.name == "multiruns"
    lrs = [yaml.safe_load((d / ".hydra" / "config.yaml").read_text())["model"]["optimizer"]["lr"] for d in dirs]
    assert lrs == [1e-3, 3e-3]
    accuracies = []
    for d in dirs:
        record = json.loads((d / "metrics.json").read_text())
        assert record["status"] == "completed" and record["optimized_metric"]["value"] is not None
        accuracies.append(record["metrics"]["test/acc"])
    # the multirun ends with its table: one row per swept lr, written into the sweep folder too
    table = (dirs[0].parent / "aggregate.md").read_text()
    assert table.splitlines()[0].startswith("| model.optimizer.lr | n | ")
    for lr, accuracy in zip(["0.001", "0.003"], accuracies):
        assert f"| {lr} | 1 | " in table and f"{accuracy:.4f} ± 0.0000" in table
    assert "sweep summary by model.optimizer.lr" in done.stderr + done.stdout


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple:
    """One uninterrupted DDP run (2 epochs of 3 steps per rank): (log dir, its record)."""
    log_dir = tmp_path_factory.mktemp("ddp")
    done = run_cli(["trainer=ddp_cpu", *QUIET], log_dir, runs=2)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(log_dir)
    return log_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_ddp_cpu_two_processes_one_run_dir(ddp_run):
    log_dir, record = ddp_run
    (run_dir,) = run_dirs(log_dir)
    assert len(list((log_dir / "debug" / "runs").iterdir())) == 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_ddp_process_1.log").read_text()
    # 2 ranks x 3 batches per epoch of a shared (distributed) sampler; global_step counts steps per rank
    assert record["status"] == "completed" and record["progress"] == {"global_step": 6, "epochs_completed": 2}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ddp_sigterm_mid_epoch_then_the_same_command_ends_with_the_uninterrupted_ddp_result(ddp_run, tmp_path):
    """The DDP cell of the kill matrix (docs/reliability.md): each rank resumes at its own position."""
    _, reference = ddp_run
    stop = signal_overrides(tmp_path / "fired", "SIGTERM", at_step=4, rank=0)  # step 4 of 6: inside epoch 2
    first = run_cli(["trainer=ddp_cpu", *QUIET, *stop], tmp_path / "logs", runs=2)
    assert first.returncode == 143, first.stderr[-2000:]  # Lightning stops the other rank at the same step
    again = run_cli(["trainer=ddp_cpu", *QUIET, *stop], tmp_path / "logs", runs=2)
    assert again.returncode == 0, again.stderr[-2000:]
    (finished,) = [r for r in map(lambda d: json.loads((d / "metrics.json").read_text()), run_dirs(tmp_path / "logs"))
                   if r["status"] == "completed"]
    assert finished["resumed_from"] and finished["progress"] == reference["progress"]
    same_metrics(finished, reference)
    same_final_weights(finished, reference)


@pytest.mark.slow
def test_ddp_inside_an_optuna_sweep_keeps_one_folder_per_trial(tmp_path):
    # hparams_search sets hydra.mode=MULTIRUN itself: rank 1 must rerun its trial, not the search
    done = run_cli(["hparams_search=seresnet_optuna", "hydra.sweeper.n_trials=2", "trainer=ddp_cpu", *QUIET], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    dirs = run_dirs(tmp_path)
    assert [d.name for d in dirs] == ["trial_0", "trial_1"]
    for d in dirs:
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (d / "train_ddp_process_1.log").read_text()
        assert json.loads((d / "metrics.json").read_text())["status"] == "completed"
    (study_dir,) = {d.parent for d in dirs}
    values = {d.name: json.loads((d / "metrics.json").read_text())["optimized_metric"]["value"] for d in dirs}
    best = yaml.safe_load((study_dir / "best_overrides.yaml").read_text())
    assert best["best_value"] == max(values.values()) == values[f"trial_{best['best_trial']}"] and len(best["overrides"]) == 3


@pytest.mark.slow
def test_missing_dataset_fails_fast_with_one_line(tmp_path):
    empty = tmp_path / "empty"
    done = run_cli(["experiment=seresnet_cifar10", f"data.data_dir={empty}"], tmp_path)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: data=cifar10: CIFAR-10 not found in") and "data.download=true" in last
    assert "Traceback" not in done.stderr
    record = json.loads(next(tmp_path.rglob("metrics.json")).read_text())
    assert record["status"] == "failed" and "CIFAR-10 not found" in record["error"]
