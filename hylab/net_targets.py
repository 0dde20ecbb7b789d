"""Which `_target_`s a checkpoint or a run-store entry may name: the nets the project defines.

A checkpoint carries weights and data, never code. The net node a hylab checkpoint embeds is
rebuilt with hydra.utils.instantiate, which imports and calls whatever `_target_` names, so every
`_target_` in the node, nested ones included, must name a net of the project's families:

- in a family's nets module, `lightning_modules/<family>/nets.py` or `.../nets/<module>.py` (the
  layout docs/architecture.md fixes): an nn.Module class, or a builder function annotated to
  return one, defined in that very module (not a name it imported, such as `torch`);
- in a family's `settings.py`: a settings dataclass (GPT's net takes its GPTConfig).

The list is derived from the code, so a new net is allowed by being written where nets live. The
name is checked as text and against the files on disk before anything is imported; only then is
the project's own module imported to check what the name is. The node is plain data: strings
with an interpolation (`${...}`, which OmegaConf would resolve) are refused too.
"""

import dataclasses
import importlib
import inspect
import re
from pathlib import Path

from hylab.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
NETS_PACKAGE = "lightning_modules"
_WORD = r"[a-z_][a-z0-9_]*"
_SHAPE = re.compile(rf"(?P<module>{NETS_PACKAGE}\.{_WORD}\.(?:nets(?:\.{_WORD})?|settings))\.(?P<name>[A-Za-z_][A-Za-z0-9_]*)")


def targets(node):
    """Every `_target_` value in a node, at any depth (Hydra instantiates nested ones too)."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield node["_target_"]
        for value in node.values():
            yield from targets(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from targets(value)


def interpolations(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from interpolations(key)
            yield from interpolations(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from interpolations(value)
    elif isinstance(node, str) and "${" in node:
        yield node


def _module_file_exists(module: str) -> bool:
    base = ROOT.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_net(obj, module: str) -> bool:
    from torch import nn

    if getattr(obj, "__module__", None) != module:
        return False
    if inspect.isclass(obj):
        return dataclasses.is_dataclass(obj) if module.endswith(".settings") else issubclass(obj, nn.Module)
    if inspect.isfunction(obj) and not module.endswith(".settings"):
        returns = inspect.signature(obj, eval_str=True).return_annotation
        return inspect.isclass(returns) and issubclass(returns, nn.Module)
    return False


def is_project_net(target) -> bool:
    """Whether `target` names a net (or a net's settings dataclass) the project defines."""
    match = _SHAPE.fullmatch(target) if isinstance(target, str) else None
    if match is None or not _module_file_exists(match["module"]):
        return False  # refused on the text alone: nothing was imported
    module = importlib.import_module(match["module"])  # the project's own code
    return _is_net(getattr(module, match["name"], None), match["module"])


def check_net_targets(config, path, key: str = "checkpoint") -> None:
    """Refuse, in one line, a net node that names anything but the project's nets, or holds an
    interpolation; nothing it names is imported."""
    if not isinstance(config, dict) or "_target_" not in config:
        raise UserError(f"{key}={path} holds no net node with a _target_ (model.net): give a checkpoint of a hylab run that trained a net")
    interpolation = next(interpolations(config), None)
    if interpolation is not None:
        raise UserError(f"{key}={path}: its net node holds the interpolation {interpolation!r}; a checkpoint's net node is plain data, so it is not built")
    for target in targets(config):
        if not is_project_net(target):
            raise UserError(
                f"{key}={path} names the _target_ {target!r}, which is not a net this project defines, so it is not built "
                f"(a checkpoint carries weights and data, never code; nets live in {NETS_PACKAGE}/<family>/nets): if the "
                "checkpoint was written before its net moved, retrain it, or evaluate it with its experiment's config, "
                f"`python run.py experiment=<name> task=test ckpt_path={path}`, which loads only the state_dict"
            )


def build_checked_net(config: dict, path, key: str = "checkpoint"):
    """hydra.utils.instantiate of a net node read from a checkpoint, after `check_net_targets`."""
    from hydra.utils import instantiate

    check_net_targets(config, path, key)
    return instantiate(config)
