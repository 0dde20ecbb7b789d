import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from hylab.cli import normalize_group_overrides
from tests.helpers import CONF_DIR, EXPERIMENTS, ROOT, compose_run, run_cli, timeout_for


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_run([f"experiment={experiment}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["task_name"] and resolved["monitor"] and resolved["mode"] in ("min", "max")
    assert resolved["optimized_metric"]
    # checkpointing and early stopping follow the experiment's monitor, never a hard-coded one
    callbacks = resolved["callbacks"] or {}
    for name in ("model_checkpoint", "early_stopping"):
        if callbacks.get(name):
            assert callbacks[name]["monitor"] == resolved["monitor"]
    if callbacks.get("model_checkpoint"):  # and last.ckpt is written after every validation
        assert callbacks["last_checkpoint"]["monitor"] is None and callbacks["last_checkpoint"]["filename"] == "last"


def test_group_overrides_accept_dot_syntax():
    argv = ["run.py", "model.net=timm", "model.net.name=resnet18", "model.optimizer=sgd,adamw", "trainer.max_epochs=3", "+x.y=1"]
    assert normalize_group_overrides(argv, CONF_DIR) == [
        "run.py", "model/net=timm", "model.net.name=resnet18", "model/optimizer=sgd,adamw", "trainer.max_epochs=3", "+x.y=1",
    ]


def test_cfg_job_imports_neither_torch_nor_lightning():
    # what keeps `--cfg job` fast (its time is measured in docs/RESULTS.md, not asserted here)
    args = [sys.executable, "-X", "importtime", str(ROOT / "run.py"), "--cfg", "job", "model.net=timm", "model.net.name=resnet18"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(0.5))
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "lightning" not in imported
    assert "timm_classifier" in done.stdout and "resnet18" in done.stdout


def test_the_framework_modules_a_run_uses_before_torch_import_no_lightning():
    """hylab/__init__.py's promise: the runner, checks, resume, store and checkpoint modules load without Lightning or torch."""
    modules = ["hylab.runner", "hylab.checks", "hylab.resume", "hylab.checkpoint_io", "hylab.checkpoints", "hylab.store", "hylab.preflight"]
    code = f"import sys; import {', '.join(modules)}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(0.5))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_a_misspelled_key_names_the_nearest_setting(tmp_path):
    done = run_cli(["trainer.max_epochz=3"], tmp_path, runs=0.5)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: trainer.max_epochz is not a setting; did you mean trainer.max_epochs?"


def test_unknown_experiment_lists_the_available_ones(tmp_path):
    done = run_cli(["experiment=no_such_experiment"], tmp_path, runs=0.5)
    assert done.returncode != 0
    assert "no_such_experiment" in done.stderr
    for name in EXPERIMENTS:
        assert name in done.stderr


def test_unknown_task_and_missing_checkpoint_fail_before_training(tmp_path):
    done = run_cli(["task=fitt"], tmp_path, runs=0.5)
    assert done.returncode == 2 and "error: task='fitt' is not a task of this config; choose one of: fit, predict, test, validate" in done.stderr
    done = run_cli(["task=chat"], tmp_path, runs=0.5)
    assert done.returncode == 2 and "it comes with tasks=gpt" in done.stderr
    done = run_cli(["ckpt_path=/nonexistent/last.ckpt"], tmp_path, runs=0.5)
    assert done.returncode == 2 and "ckpt_path=/nonexistent/last.ckpt does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_two_runs_started_together_get_two_folders(tmp_path):
    # Two runs of the default experiment, stopped once Hydra has made both run dirs.
    args = [sys.executable, str(ROOT / "run.py"), f"paths.log_dir={tmp_path}"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    runs_dir = tmp_path / "seresnet_digits" / "runs"
    deadline = time.monotonic() + 60
    while len(list(runs_dir.glob("*/.hydra/config.yaml"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for proc in procs:
        proc.kill()
        proc.wait(timeout=timeout_for(0.5))
    runs = sorted(runs_dir.iterdir())
    assert len(runs) == 2 and runs[0].name != runs[1].name
