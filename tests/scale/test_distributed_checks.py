"""The one-line checks of hylab/distributed_checks.py, and FSDP itself on a GPU."""

import importlib.util

import pytest
from omegaconf import OmegaConf

from hylab import distributed_checks
from hylab.distributed_checks import check_fsdp_accelerator, check_storage_driver
from hylab.errors import UserError
from tests.helpers import compose_run, run_in_process


def trainer(**node):
    return OmegaConf.create(node)


def test_fsdp_on_cpu_fails_with_one_line_naming_the_cpu_alternative(tmp_path):
    cfg = compose_run(["trainer=fsdp", "trainer.accelerator=cpu"], tmp_path)
    with pytest.raises(UserError, match="trainer.strategy=fsdp needs CUDA GPUs") as err:
        check_fsdp_accelerator(cfg.trainer)
    assert "\n" not in str(err.value) and "trainer=ddp_cpu" in str(err.value)


def test_fsdp_by_name_is_recognized_and_ddp_passes():
    with pytest.raises(UserError):
        check_fsdp_accelerator(trainer(accelerator="cpu", strategy="fsdp"))
    check_fsdp_accelerator(trainer(accelerator="cpu", strategy="ddp", devices=2))
    check_fsdp_accelerator(trainer(accelerator="cpu", devices=1))


def test_fsdp_without_a_visible_gpu_fails_with_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        check_fsdp_accelerator(trainer(accelerator="gpu", strategy={"_target_": "lightning.pytorch.strategies.FSDPStrategy"}))


def test_postgres_storage_without_its_driver_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(distributed_checks.importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a))
    with pytest.raises(UserError, match=r"needs the psycopg driver, which is not installed: uv sync --extra postgres$"):
        check_storage_driver("postgresql+psycopg://hylab@127.0.0.1:55432/optuna")
    check_storage_driver("sqlite:///study.db")
    check_storage_driver("journal:/tmp/j.log")
    check_storage_driver(None)


@pytest.mark.gpu
@pytest.mark.slow
def test_fsdp_trains_on_one_gpu(tmp_path):
    value, record = run_in_process(["trainer=fsdp", "trainer.devices=1", "debug=limit", "callbacks.progress_bar=null"], tmp_path / "run")
    assert record["status"] == "completed" and value is not None
