"""Loading nets from hylab checkpoints (teachers, base models) with clear errors.

The one reader of hylab checkpoints: `load_checkpoint` (the file), `net_config` (the embedded
net node), `net_state_dict` (its weights), `check_net_targets` (the node's targets still exist),
`load_net` (all of it: a net in eval mode) and `check_shapes`.
"""

import importlib
from pathlib import Path

from hylab.checks import check_checkpoint_file
from hylab.errors import UserError


def load_checkpoint(path: str | Path, key: str = "checkpoint") -> dict:
    """torch.load with weights_only=True: a checkpoint cannot run code when it is read."""
    import torch

    path = check_checkpoint_file(str(path), key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise UserError(f"{key}={path} could not be loaded ({type(err).__name__}: {err})") from err


def net_config(checkpoint: dict, key: str = "checkpoint") -> dict:
    try:
        return checkpoint["hylab"]["config"]["model"]["net"]
    except (KeyError, TypeError):
        raise UserError(f"{key} was not written by a hylab run (no embedded config): give a hylab checkpoint") from None


def net_state_dict(checkpoint: dict, prefix: str = "net.") -> dict:
    state = checkpoint.get("state_dict", {})
    return {name[len(prefix):]: value for name, value in state.items() if name.startswith(prefix)}


def load_net(path: str | Path, key: str = "checkpoint", expected=None):
    """Rebuild the net a hylab checkpoint was trained with and load its weights (eval mode).

    `expected` (an nn.Module) is an optional net whose parameter shapes must match.
    """
    return load_net_and_config(path, key, expected)[0]


def load_net_and_config(path: str | Path, key: str = "checkpoint", expected=None) -> tuple:
    """(net, run config) of a hylab checkpoint, read once: `load_net` plus the resolved config
    the run embedded (for what the net was trained on, e.g. its data settings)."""
    from hydra.utils import instantiate

    checkpoint = load_checkpoint(path, key)
    config = net_config(checkpoint, key)
    check_net_targets(config, path, key)
    net = instantiate(config)
    state = net_state_dict(checkpoint)
    check_shapes(net, state, f"{key}={path}")
    net.load_state_dict(state)
    if expected is not None:
        check_shapes(expected, net.state_dict(), f"{key}={path}")
    return net.eval(), checkpoint["hylab"]["config"]


def load_stored_net(experiment: str, overrides: list[str], key: str, store_dir: str | None = None,
                    log_dir: str | None = None, expected=None) -> tuple:
    """(net, run config, store entry) of `experiment` + `overrides` from the run store, trained
    first (once) when the store has no such run. `store_dir` None: the store the experiment's
    own config names; store.* is outside the training hash, so the entry is the same either way."""
    from hylab.store import RunStore, compose_for

    overrides = [str(o) for o in overrides]
    if store_dir:
        overrides.append(f"store.dir={store_dir}")  # the run trained for it lands in that store too
    else:
        store_dir = compose_for(experiment, overrides, log_dir).store.dir
    entry = RunStore(store_dir).get_or_train(experiment, overrides, log_dir)
    net, config = load_net_and_config(entry.checkpoint, key, expected)
    return net, config, entry


def _targets(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield str(node["_target_"])
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _exists(target: str) -> bool:
    """Whether `pkg.module.name` names an attribute of an importable module. A module that exists
    but fails to import (a missing dependency) raises as itself: that is not a moved target."""
    module_path, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        if err.name and (module_path == err.name or module_path.startswith(err.name + ".")):
            return False
        raise
    return hasattr(module, name)


def check_net_targets(config: dict, path: str | Path, key: str = "checkpoint") -> None:
    """Refuse, in one line, a net whose `_target_` no longer exists: a checkpoint written before
    the code it names was moved or renamed."""
    for target in _targets(config):
        if not _exists(target):
            raise UserError(
                f"{key}={path} names the net _target_ {target}, which no longer exists (the checkpoint was written "
                "before the code moved): retrain it (a teacher or base model from the run store is retrained "
                "automatically), or evaluate it with its experiment's config, `python run.py experiment=<name> "
                f"task=test ckpt_path={path}`, which loads only the state_dict"
            )


def check_shapes(net, state: dict, what: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{name}: {tuple(state[name].shape)} vs {tuple(own[name].shape)}" for name in own if name in state and own[name].shape != state[name].shape]
    if missing or unexpected or mismatched:
        details = "; ".join(filter(None, [
            f"missing {missing[:5]}" if missing else "",
            f"unexpected {unexpected[:5]}" if unexpected else "",
            f"shape mismatch {mismatched[:5]}" if mismatched else "",
        ]))
        raise UserError(f"{what} does not fit the net: {details}")
