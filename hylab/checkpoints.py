"""Loading nets from hylab checkpoints (teachers, base models) with clear errors.

The one reader of hylab checkpoints: `load_checkpoint` (the file), `net_config` (the embedded
net node), `net_state_dict` (its weights), `load_net` (all of it: a net in eval mode),
`check_shapes`, and the one loader of "a net from a checkpoint or a stored experiment":
`source_checkpoint` (the file a NetSource names, trained by the store once if absent) and
`load_from_source` (its net). A checkpoint carries weights and data, never code: the file is read with
`weights_only=True`, and the net node is built only when every `_target_` in it names a net the
project defines (`check_net_targets`, hylab/net_targets.py).
"""

from pathlib import Path

from dataclasses import dataclass, field

from hylab.checks import check_checkpoint_file
from hylab.errors import UserError
from hylab.net_source import NetSource
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


@dataclass
class SourceCheckpoint:
    """The checkpoint a NetSource names, and where it came from (recorded in the run's checkpoint)."""

    path: Path
    record: dict  # {"checkpoint": ...} or {"experiment", "overrides", "store_key", "run_id", "run_dir"}
    metrics: dict = field(default_factory=dict)  # the stored run's final metrics ({} for a checkpoint)


def source_checkpoint(source: NetSource) -> SourceCheckpoint:
    """The checkpoint file of `source`: its `checkpoint`, or the run-store entry of `experiment` +
    `overrides`, trained first (once) when the store has none. store.* is outside the training
    hash, so the entry is the same whichever store_dir asks."""
    if source.checkpoint:
        return SourceCheckpoint(Path(source.checkpoint), {"checkpoint": str(source.checkpoint)})
    from hylab.store import RunStore, compose_for

    overrides, store_dir = list(source.overrides), source.store_dir
    if store_dir:
        overrides.append(f"store.dir={store_dir}")  # the run trained for it lands in that store too
    else:
        store_dir = compose_for(source.experiment, overrides, source.log_dir).store.dir
    entry = RunStore(store_dir).get_or_train(source.experiment, overrides, source.log_dir)
    record = {"experiment": source.experiment, "overrides": list(source.overrides), "store_key": entry.key,
              "run_id": entry.record.get("run_id"), "run_dir": entry.run_dir}
    return SourceCheckpoint(Path(entry.checkpoint), record, entry.record.get("metrics") or {})


def load_from_source(source: NetSource, key: str, expected=None) -> tuple:
    """(net in eval mode, its run config, SourceCheckpoint) of `source`; `expected` (an
    nn.Module) is an optional net whose parameter shapes must match."""
    found = source_checkpoint(source)
    net, config = load_net_and_config(found.path, key, expected)
    return net, config, found


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
