"""Checks that run before anything is built or trained, each failing with one clear line."""

import zipfile
from pathlib import Path

from omegaconf import DictConfig

from hylab.checkpoint_peek import embedded_config, is_torch_checkpoint
from hylab.distributed_checks import check_fsdp_accelerator
from hylab.errors import UserError
from hylab.instantiate import check_logger_packages
from hylab.schemas import check_values
from hylab.tasks import check_task

EVALUATION_TASKS = ("test", "validate", "predict")


def check_checkpoint_file(path_value: str, key: str = "ckpt_path") -> Path:
    path = Path(path_value).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.rglob("*.ckpt"))[:10]
        hint = f"checkpoints under it: {found}" if found else "it holds no .ckpt file"
        raise UserError(f"{key}={path_value} is a folder, not a checkpoint file; {hint}")
    if not path.is_file():
        raise UserError(f"{key}={path_value} does not exist; give the path of a .ckpt file (a run's checkpoints/last.ckpt)")
    # torch.save writes a zip archive; a truncated or foreign file has no readable central directory.
    if not zipfile.is_zipfile(path) or not is_torch_checkpoint(path):
        raise UserError(f"{key}={path_value} is not a readable checkpoint (truncated, corrupt or not written by torch.save)")
    return path


def _built(model: dict | DictConfig) -> str:
    net = (model or {}).get("net") or {}
    target = (model or {}).get("_target_")
    return f"{target} with net {net.get('_target_')}" if isinstance(net, (dict, DictConfig)) and net.get("_target_") else str(target)


def _net_target(model: dict | DictConfig | None) -> str | None:
    net = (model or {}).get("net")
    return str(net["_target_"]) if isinstance(net, (dict, DictConfig)) and net.get("_target_") else None


def _same_model(held: dict | DictConfig | None, builds: dict | DictConfig | None) -> bool:
    """Whether a checkpoint's weights are meant for the model the run builds: the same net by name
    when both name one (a package move changes the module path, not the weights), else the same
    LightningModule by name (a GPT run's config leaves the net to the module)."""
    nets = _net_target(held), _net_target(builds)
    pair = nets if all(nets) else ((held or {}).get("_target_"), (builds or {}).get("_target_"))
    return str(pair[0]).rsplit(".", 1)[-1] == str(pair[1]).rsplit(".", 1)[-1]


def check_checkpoint_matches(cfg: DictConfig) -> None:
    """A checkpoint of another model (a RIS checkpoint given to an image run) stops here, not in a
    screen of state_dict keys: its embedded config names the model it holds."""
    trained = embedded_config(Path(str(cfg.ckpt_path)).expanduser())
    if not trained or not cfg.get("model"):
        return
    held, builds = _built(trained.get("model")), _built(cfg.model)
    if not _same_model(trained.get("model"), cfg.model):
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} holds a {held} (task_name={trained.get('task_name')}), but this run builds a {builds}; "
            "give the experiment that trained it (experiment=...) or a checkpoint of this one"
        )


def check_accelerator(trainer_cfg: DictConfig) -> None:
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    available = torch.cuda.device_count()
    if available == 0:
        raise UserError(
            f"trainer.accelerator={accelerator} but no CUDA GPU is visible: use trainer=cpu, "
            "or trainer=ddp_cpu for distributed training on CPU"
        )
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, int) and devices > available:
        raise UserError(f"trainer.devices={devices} but only {available} GPU(s) are visible: set trainer.devices<={available}")


def check_config(cfg: DictConfig, devices: bool = True) -> None:
    """Everything that can be checked without torch: the task, every typed value, files; and,
    unless `devices=False` (a config prepared for another machine), the GPUs it asks for."""
    check_task(cfg.task, cfg.get("tasks") or {})
    check_values(cfg)
    if cfg.get("ckpt_path"):
        check_checkpoint_file(cfg.ckpt_path)
        check_checkpoint_matches(cfg)
    elif cfg.task in EVALUATION_TASKS:
        raise UserError(f"task={cfg.task} evaluates a checkpoint: add ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    check_logger_packages(cfg.get("logger"))
    if cfg.get("trainer") and devices:
        check_fsdp_accelerator(cfg.trainer)
        check_accelerator(cfg.trainer)
