"""Hardware is an overlay (conf/hardware/): every experiment takes `hardware=gpu`, no experiment
has a GPU copy, and the overlay leaves the training hash alone except where training changes."""

import re

import pytest

from omegaconf import OmegaConf

from hylab.checks import check_config
from hylab.errors import UserError
from hylab.store import training_hash
from tests.helpers import CONF_DIR, EXPERIMENTS, ROOT, compose_run

# The places a user reads or runs an experiment name from.
NAMED_IN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.py")),
            *sorted((ROOT / "tests").rglob("*.py")), *sorted((ROOT / "conf").rglob("*.yaml"))]


def test_every_experiment_takes_the_gpu_overlay(tmp_path):
    for experiment in EXPERIMENTS:
        gpu = compose_run([f"experiment={experiment}", "hardware=gpu"], tmp_path / "gpu")
        try:  # every typed value, before torch; this machine needs no GPU
            check_config(gpu, devices=False)
        except UserError as error:
            raise AssertionError(f"experiment={experiment} hardware=gpu: {error}") from None
        assert (gpu.trainer.accelerator, gpu.trainer.devices, gpu.trainer.precision) == ("gpu", 1, "bf16-mixed")


@pytest.mark.parametrize("experiment", ["seresnet_digits", "gpt_tiny", "har_base"])
def test_only_precision_of_the_overlay_enters_the_training_hash(experiment, tmp_path):
    # accelerator, devices, loader workers and TF32 do not change the trained weights
    cpu = compose_run([f"experiment={experiment}"], tmp_path / "cpu")
    gpu = compose_run([f"experiment={experiment}", "hardware=gpu"], tmp_path / "gpu")
    same_precision = compose_run([f"experiment={experiment}", "hardware=gpu",
                                  f"trainer.precision={cpu.trainer.precision}"], tmp_path / "same")
    assert training_hash(same_precision) == training_hash(cpu) != training_hash(gpu)


def test_the_default_cpu_overlay_changes_nothing(tmp_path):
    # so every CPU experiment keeps its training hash, and its stored runs stay reusable
    assert OmegaConf.load(CONF_DIR / "hardware" / "cpu.yaml") in (None, {})
    assert compose_run([], tmp_path / "run").hydra.runtime.choices.hardware == "cpu"


def test_the_gpu_recipe_of_fmnist_speed_is_what_was_measured(tmp_path):
    cfg = compose_run(["experiment=fmnist_speed", "hardware=gpu"], tmp_path / "run")
    assert (cfg.data.batch_size, cfg.model.optimizer.lr, cfg.trainer.max_epochs, cfg.model.compile) == (512, 0.1, 10, True)
    assert cfg.data.num_workers == 0  # in-memory images, augmented per batch


def test_no_experiment_has_a_gpu_copy():
    assert not sorted((CONF_DIR / "experiment").glob("*_gpu.yaml"))
    named = [f"{path.relative_to(ROOT)}: {hit}" for path in NAMED_IN if path.name != "test_hardware.py"
             for hit in re.findall(r"experiment=\w+_gpu\b|`\w+_gpu`", path.read_text())]
    assert not named, named
