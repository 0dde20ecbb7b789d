"""Instantiate the config groups that hold several named objects (callbacks, loggers)."""

import importlib.util

from omegaconf import DictConfig, open_dict

from hylab.errors import UserError

# Loggers that are optional extras: the class name -> (module it needs, how to install it).
OPTIONAL_LOGGERS = {
    "TensorBoardLogger": (("tensorboard", "tensorboardX"), "uv sync --extra tensorboard"),
    "MLFlowLogger": (("mlflow",), "uv sync --extra mlflow"),
    "WandbLogger": (("wandb",), "uv sync --extra wandb"),
}


def named_configs(group: DictConfig | None) -> dict[str, DictConfig]:
    """The entries of a group that are objects to build (have a _target_); nulls switch one off."""
    if not group:
        return {}
    return {name: node for name, node in group.items() if isinstance(node, DictConfig) and "_target_" in node}


def check_logger_packages(logger_group: DictConfig | None) -> None:
    for name, node in named_configs(logger_group).items():
        class_name = str(node._target_).rsplit(".", 1)[-1]
        modules, install = OPTIONAL_LOGGERS.get(class_name, ((), ""))
        if modules and not any(importlib.util.find_spec(module) for module in modules):
            raise UserError(f"logger={name} needs the {modules[0]} package, which is not installed: run `{install}`")


def build(node: DictConfig, **kwargs):
    """hydra.utils.instantiate, except that a UserError raised by the target surfaces as itself
    (Hydra wraps it in an InstantiationException with the message buried in a traceback)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    kwargs.setdefault("_convert_", "all")  # plain dicts and lists, never DictConfig, reach the objects
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


# A callback or logger node with `_training_: false` only observes the run (progress, logging,
# plots): the run store leaves it out of the training hash. hylab removes the key before building.
TRAINING_FLAG = "_training_"


def affects_training(node) -> bool:
    return not (isinstance(node, (dict, DictConfig)) and node.get(TRAINING_FLAG) is False)


def without_flags(node: DictConfig) -> DictConfig:
    if TRAINING_FLAG not in node:
        return node
    node = node.copy()
    with open_dict(node):
        del node[TRAINING_FLAG]
    return node


def instantiate_group(group: DictConfig | None) -> list:
    return [build(without_flags(node)) for node in named_configs(group).values()]
