"""run.py as users type it: sweeps, DDP with subprocess launch, errors at the shell."""

import json

import pytest
import yaml

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


@pytest.mark.slow
def test_ddp_cpu_two_processes_one_run_dir(tmp_path):
    done = run_cli(["trainer=ddp_cpu", *QUIET], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    assert len(list((tmp_path / "debug" / "runs").iterdir())) == 1
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (run_dir / "train_ddp_process_1.log").read_text()
    record = json.loads((run_dir / "metrics.json").read_text())
    # 2 ranks x 3 batches per epoch of a shared (distributed) sampler; global_step counts steps per rank
    assert record["status"] == "completed" and record["progress"] == {"global_step": 6, "epochs_completed": 2}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


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
