"""Where a net comes from: a checkpoint, or an experiment's run from the run store.

One schema for every such setting (a distillation teacher, a pre-trained encoder, a base model to
fine-tune, a GPT to start from): exactly one of `checkpoint` (a hylab .ckpt) or `experiment`
(+ `overrides`: the store trains that run once if absent, then reuses it). Torch-free: a
family's settings dataclass inherits it, so the rule is checked with every other value before
torch; hylab.checkpoints.load_from_source builds the net.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from hylab.settings import parse_settings

EXACTLY_ONE = "give exactly one of checkpoint=<path to .ckpt> or experiment=<name> (the run store trains or reuses that experiment's run)"


@dataclass
class NetSource:
    checkpoint: str | None = None
    experiment: str | None = None
    overrides: list[str] | None = None  # for `experiment`: what its run changes
    store_dir: str | None = None  # None: the store the experiment's own config names
    log_dir: str | None = None  # where a run the store trains writes its logs

    def __post_init__(self):
        if bool(self.checkpoint) == bool(self.experiment):
            raise ValueError(EXACTLY_ONE)
        self.overrides = [str(o) for o in self.overrides or []]


def net_source(values: Mapping, key: str) -> NetSource:
    """The NetSource keys of `values` (a settings node or a constructor's arguments), checked:
    one `key: ...` line when not exactly one of checkpoint or experiment is given."""
    names = {f.name for f in fields(NetSource)}
    given = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in values.items() if k in names}
    return parse_settings(NetSource, given, key)
