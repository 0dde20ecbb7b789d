"""The command line checked before Hydra makes a run folder.

Hydra creates the run folder (and its `.hydra/`, log file) before the task function runs, and
reports a bad override, an unset environment variable or an unwritable log dir as a screen of
traceback. Composing the same config here first, with Hydra's compose API, lets every such input
stop in one line, exit 2, with nothing written. In `-m` mode every value of every swept key is
composed and checked once (with the first value of the others), so a bad value stops the whole
sweep before its first job. Imports no torch.
"""

import difflib
import os
import re
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from hylab.errors import UserError

MULTIRUN_FLAGS = ("-m", "--multirun")
MIN_FREE_BYTES = 16 * 2**20  # below this a run cannot write its config, log and first checkpoint
UNSET_ENV = re.compile(r"Environment variable '([^']+)' not found")
NOT_OVERRIDABLE = re.compile(r"Could not override '([^']+)'")


def preflight(argv: list[str], conf_dir: Path) -> None:
    """Exit 2 with one `error:` line when the command's config cannot make a run; else return.
    Commands with other flags (`--cfg`, `--help`, `--config-dir`, ...) are left to Hydra."""
    args = argv[1:]
    flags = [arg for arg in args if arg.startswith("-")]
    if any(flag not in MULTIRUN_FLAGS for flag in flags):
        return
    overrides = [arg for arg in args if not arg.startswith("-") and not arg.lstrip("+~").startswith("hydra")]
    try:
        check_pruner_overrides(args)
        for combination in _combinations(overrides, multirun=bool(flags)):
            check_command(combination, conf_dir)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception:  # anything else is the run's (or Hydra's) to report, as without this check
        return


def check_pruner_overrides(args: list[str]) -> None:
    """`hydra.sweeper.pruner=<name>` names one of optuna's pruners (Hydra's own keys are not composed here)."""
    from hylab.pruning import PRUNERS

    for arg in args:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "hydra.sweeper.pruner" and value not in PRUNERS:
            raise UserError(f"hydra.sweeper.pruner={value} is not a pruner; choose one of: {', '.join(PRUNERS)}")


def _combinations(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists to check: the command itself, or in `-m` mode each swept value once.
    Sweeps Hydra cannot list (interval(), tag()) are left to the sweeper."""
    if not multirun:
        return [overrides]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports a malformed override itself
        return []
    base, swept = [], []
    for text, override in zip(overrides, parsed):
        if not override.is_sweep_override():
            base.append(text)
            continue
        try:
            values = list(override.sweep_string_iterator())
        except Exception:
            continue
        if not values:
            raise UserError(f"{text} sweeps over no values, so there is nothing to run; give at least one value")
        swept.append((override.get_key_element(), values))
    firsts = [f"{key}={values[0]}" for key, values in swept]
    combinations = [base + firsts]
    for index, (key, values) in enumerate(swept):
        for value in values[1:]:
            combinations.append(base + firsts[:index] + [f"{key}={value}"] + firsts[index + 1 :])
    return combinations


def check_command(overrides: list[str], conf_dir: Path) -> None:
    """Compose `overrides` as run.py would and check what a run needs before it starts."""
    cfg = _compose(overrides, conf_dir)
    _check_interpolations(cfg)
    _check_paths(cfg)
    from hylab.checks import check_config

    check_config(cfg, devices=False)  # GPUs are checked in the run: that needs torch


def _compose(overrides: list[str], conf_dir: Path) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import ConfigCompositionException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
    except ConfigCompositionException as err:
        found = NOT_OVERRIDABLE.search(str(err))
        if not found:
            raise _LeaveToHydra from None
        key = found.group(1)
        raise UserError(_unknown_key(key, [o for o in overrides if o.partition("=")[0].lstrip("+~") != key], conf_dir)) from None
    except Exception:
        raise _LeaveToHydra from None
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "<run dir>"  # made by Hydra once the checks pass
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


class _LeaveToHydra(Exception):
    """An input this module does not know how to word: Hydra reports it, as without this check."""


def _unknown_key(key: str, others: list[str], conf_dir: Path) -> str:
    """`trainer.max_epoch is not a setting; did you mean trainer.max_epochs?`"""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    known: list[str] = []
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            cfg = compose("config", overrides=others)
        parent, _, _ = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(node, DictConfig):
            known = [f"{parent}.{name}" if parent else str(name) for name in node.keys()]
    except Exception:
        pass
    finally:
        GlobalHydra.instance().clear()
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"{key} is not a setting; did you mean {close[0]}?"
    return f"{key} is not a setting; to add a new key write +{key}=<value>"


def _check_interpolations(cfg: DictConfig) -> None:
    """Every `${...}` outside `hydra:` resolves (an unset `${oc.env:NAME}` stops here)."""
    from omegaconf.errors import InterpolationResolutionError

    names = sorted((name for name in cfg if name != "hydra"), key=lambda name: name != "paths")  # paths first: others use them
    for name in names:
        try:
            node = cfg[name]
            if isinstance(node, DictConfig):
                OmegaConf.to_container(node, resolve=True)
        except InterpolationResolutionError as err:
            key = getattr(err, "full_key", None) or name
            raw = _raw(cfg, key)
            unset = UNSET_ENV.search(str(err))
            if unset:
                raise UserError(f"{key}={raw} needs the environment variable {unset.group(1)}, which is not set; set it, or give {key} a value") from None
            raise UserError(f"{key}={raw} cannot be resolved ({getattr(err, 'msg', err)}); give {key} a value") from None


def _raw(cfg: DictConfig, key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    try:
        return str(node._get_node(leaf)._value())
    except Exception:
        return "?"


def _check_paths(cfg: DictConfig) -> None:
    """No empty `paths.*` (an empty log dir would write at the filesystem root); the log dir can be written."""
    paths = cfg.get("paths") or {}
    for name in paths:
        if name == "output_dir":
            continue
        value = paths[name]
        if value is None or not str(value).strip():
            raise UserError(f"paths.{name} is empty; give it a folder, or leave it out for the default")
    if paths.get("log_dir"):
        check_writable_folder(Path(str(paths.log_dir)).expanduser(), "paths.log_dir")


def check_writable_folder(folder: Path, key: str) -> None:
    """`folder` exists as a writable folder with room, or can be made in one that is."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{key}={folder}: {existing} is a file, not a folder; choose another {key}")
    stats = os.statvfs(existing)
    if stats.f_flag & os.ST_RDONLY or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{key}={folder} cannot be written ({existing} is read-only); choose another {key}")
    free = stats.f_bavail * stats.f_frsize
    if free < MIN_FREE_BYTES:
        raise UserError(f"{key}={folder} is on a full disk ({free // 2**20} MiB free at {existing}); free some space or choose another {key}")
