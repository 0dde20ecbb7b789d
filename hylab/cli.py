"""Command-line conveniences applied to argv before Hydra parses it."""

from pathlib import Path


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
