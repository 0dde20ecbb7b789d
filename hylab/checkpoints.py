"""Loading nets from hylab checkpoints (teachers, base models) with clear errors.

The one reader of hylab checkpoints: `load_checkpoint` (the file), `net_config` (the embedded
net node), `net_state_dict` (its weights), `load_net` (all of it: a net in eval mode) and
`check_shapes`. A checkpoint carries weights and data, never code: the file is read with
`weights_only=True`, and the net node is built only when every `_target_` in it names a net the
project defines (`check_net_targets`, hylab/net_targets.py).
"""

from pathlib import Path

from hylab.checks import check_checkpoint_file
from hylab.errors import UserError
from hylab.net_targets import build_checked_net, check_net_targets  # noqa: F401  (re-exported)


def load_checkpoint(path: str | Path, key: str = "checkpoint") -> dict:
    """torch.load with weights_only=True: unpickling the file runs no code. (Building the net it
    names is `load_net`'s, which builds only the project's nets: hylab/net_targets.py.)"""
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
    checkpoint = load_checkpoint(path, key)
    net = build_checked_net(net_config(checkpoint, key), path, key)
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
