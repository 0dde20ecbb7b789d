"""Command-line conveniences applied to argv before Hydra parses it."""

import sys
from pathlib import Path

OVERRIDES_FILE = "overrides_file="


def expand_overrides_files(argv: list[str]) -> list[str]:
    """Replace `overrides_file=<yaml>` by the overrides the file lists.

    The file holds `overrides: [key=value, ...]` (as the optuna sweeper's best_overrides.yaml
    does) or `best_params: {key: value}`; overrides after it on the command line still win.
    """
    expanded = []
    for arg in argv:
        if not arg.startswith(OVERRIDES_FILE):
            expanded.append(arg)
            continue
        expanded += _listed_overrides(arg)
    return expanded


def _listed_overrides(arg: str) -> list[str]:
    import yaml

    path = Path(arg[len(OVERRIDES_FILE) :]).expanduser()
    if not path.is_file():
        _refuse(f"{arg}: no such file; give the path of a YAML file with `overrides: [key=value, ...]`")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        _refuse(f"{arg}: not valid YAML{at} ({getattr(err, 'problem', None) or type(err).__name__}); fix the file")
    if isinstance(content, dict) and isinstance(content.get("overrides"), list):
        return [str(item) for item in content["overrides"]]
    if isinstance(content, dict) and isinstance(content.get("best_params"), dict):
        return [f"{key}={value}" for key, value in content["best_params"].items()]
    _refuse(f"{arg}: expected a list under 'overrides' or a mapping under 'best_params', found a {type(content).__name__}")


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def normalize_group_overrides(argv: list[str], conf_dir: Path) -> list[str]:
    """Accept `model.net=timm` for the nested config group `model/net`.

    Hydra reads `model.net=timm` as "set the value model.net to the string 'timm'", which is
    never what is meant when conf/model/net/timm.yaml exists. Rewrite it to Hydra's group syntax
    `model/net=timm` (also for comma-separated sweeps over options).
    """
    normalized = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key and key[0] not in "+~-" and "." in key and "/" not in key:
            group = conf_dir / key.replace(".", "/")
            options = value.split(",")
            if group.is_dir() and all(option and (group / f"{option}.yaml").is_file() for option in options):
                arg = f"{key.replace('.', '/')}={value}"
        normalized.append(arg)
    return normalized


def check_group_choices(argv: list[str], conf_dir: Path) -> None:
    """`group=option` where conf/<group>/ has no <option>.yaml: one line that lists the options
    (Hydra's own message is a screen with the config search path). A command that adds config
    folders (hydra.searchpath, --config-dir) is left to Hydra: its options are not all in conf/."""
    if any(arg.startswith(("hydra.searchpath", "--config-dir", "-cd")) for arg in argv[1:]):
        return
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or not key or key.startswith(("~", "-", "hydra")) or "." in key:
            continue
        group = conf_dir / key
        if not group.is_dir() or value in ("null", "None", ""):
            continue
        options = sorted(p.stem for p in group.glob("*.yaml") if not p.stem.startswith("_"))
        for option in _sweep_values(value):
            if option not in options:
                print(f"error: {key}={option} is not an option of {key}; choose one of: {', '.join(options)}", file=sys.stderr)
                raise SystemExit(2)


def _sweep_values(value: str) -> list[str]:
    """The options a group override names: `a`, or `a,b` in a sweep; other sweep syntax is left to Hydra."""
    if any(mark in value for mark in "()[]{}$"):
        return []
    return [part.strip() for part in value.split(",") if part.strip()]
