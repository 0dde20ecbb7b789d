"""Checks for running at scale, each failing with one line before anything is built:
FSDP needs CUDA (Lightning refuses it on CPU), and a PostgreSQL study storage needs its driver.

Checked with torch 2.15 and Lightning 2.6.6: `FSDPStrategy` with `accelerator=cpu` raises
"The strategy `fsdp` requires a GPU accelerator"; DDP (gloo) is the CPU path across processes and nodes.
"""

import importlib.util

from omegaconf import DictConfig

from hylab.errors import UserError

FSDP_NAMES = ("fsdp", "FSDPStrategy")
# SQLAlchemy dialect+driver -> (module, install command)
STORAGE_DRIVERS = {
    "postgresql+psycopg": ("psycopg", "uv sync --extra postgres"),
    "postgresql": ("psycopg2", "uv sync --extra postgres and use postgresql+psycopg://"),
}


def uses_fsdp(trainer_cfg: DictConfig) -> bool:
    strategy = trainer_cfg.get("strategy")
    if isinstance(strategy, str):
        return strategy.split("_")[0] in FSDP_NAMES
    if strategy is not None and hasattr(strategy, "get"):
        return str(strategy.get("_target_", "")).rsplit(".", 1)[-1] in FSDP_NAMES
    return False


def check_fsdp_accelerator(trainer_cfg: DictConfig) -> None:
    """trainer=fsdp on a CPU (or with no GPU visible) stops with one line instead of Lightning's traceback."""
    if not trainer_cfg or not uses_fsdp(trainer_cfg):
        return
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator == "cpu":
        raise UserError(
            "trainer.strategy=fsdp needs CUDA GPUs: Lightning's FSDPStrategy refuses accelerator=cpu; "
            "use trainer=ddp_cpu (or trainer=ddp_cpu_multinode across nodes) on CPUs"
        )
    if accelerator in ("auto", "gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                f"trainer.strategy=fsdp with trainer.accelerator={accelerator} but no CUDA GPU is visible: "
                "FSDP runs on GPUs only; use trainer=ddp_cpu on CPUs"
            )


def check_storage_driver(url: str | None, key: str = "hydra.sweeper.storage") -> None:
    """A study storage URL whose database driver is not installed stops with the install command."""
    if not url or "://" not in str(url):
        return
    scheme = str(url).split("://", 1)[0]
    if scheme not in STORAGE_DRIVERS:
        return
    module, install = STORAGE_DRIVERS[scheme]
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{key}={scheme}://... needs the {module} driver, which is not installed: {install}")
