"""The config tree printed at the start of a run and saved beside it."""

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from hylab.redact import redact

FIRST_FIELDS = ("task", "data", "model", "callbacks", "logger", "trainer", "paths")


def print_config_tree(cfg: DictConfig, save_to: Path | None = None) -> None:
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    ordered = [f for f in FIRST_FIELDS if f in cfg] + [f for f in cfg if f not in FIRST_FIELDS]
    for name in ordered:
        branch = tree.add(str(name), style="bold", guide_style="dim")
        node = cfg[name]
        if isinstance(node, DictConfig):
            text = OmegaConf.to_yaml(OmegaConf.create(redact(OmegaConf.to_container(node, resolve=True))))
        else:
            text = str(redact({name: node})[name])
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)
    if save_to is not None:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        with open(Path(save_to) / "config_tree.log", "w") as handle:
            rich.print(tree, file=handle)
