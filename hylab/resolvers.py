"""OmegaConf resolvers used by conf/; registered once, before Hydra composes a config."""

import secrets
from pathlib import Path

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _run_uid() -> str:
    # Cached per config object by OmegaConf, so a run dir is named once; the random part keeps
    # two runs started in the same second apart.
    return secrets.token_hex(3)


def _experiment_name(*, _root_) -> str:
    """The selected experiment's name. ${hydra:runtime.choices.experiment} needs HydraConfig,
    which a multirun launcher's own config (its folders name the task) is resolved without."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().runtime.choices.get("experiment")
    return _root_.hydra.runtime.choices.get("experiment")


def register() -> None:
    OmegaConf.register_new_resolver("experiment_name", _experiment_name, replace=True)
    OmegaConf.register_new_resolver("run_uid", _run_uid, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    # mode: max|min (checkpointing's words) -> maximize|minimize (optuna's words)
    OmegaConf.register_new_resolver("optuna_direction", lambda mode: {"max": "maximize", "min": "minimize"}[mode], replace=True)


register()
