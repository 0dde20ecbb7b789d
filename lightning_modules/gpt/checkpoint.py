"""What a GPT checkpoint carries besides the weights, and how to read it back without Hydra.

Every checkpoint the family writes holds checkpoint["gpt"] = {"config": GPTConfig as a dict,
"tokenizer": the tokenizer's JSON}: plain values, so `torch.load(weights_only=True)` reads it, and
a checkpoint alone is enough to chat with, generate from or fine-tune. The net is rebuilt from
that entry, not from the run's embedded config: a chat fine-tune has `model.net: null` there, and
the entry names no code path, so checkpoints written before the family became a package load too
(and a checkpoint cannot make it build anything but a GPT: the entry must hold GPTConfig's fields
as plain numbers).
Reading the file and the weights is hylab.checkpoints'.
"""

from dataclasses import dataclass, fields
from pathlib import Path

import torch

from datamodules.gpt.tokenizer import GPTTokenizer
from hylab.checkpoints import check_shapes, load_checkpoint, net_state_dict
from hylab.errors import UserError
from lightning_modules.gpt.nets import GPT
from lightning_modules.gpt.settings import GPTConfig

CHECKPOINT_KEY = "gpt"
# A net compiled with torch.compile(net) (not net.compile()) saves its weights under this prefix.
COMPILED_PREFIX = "_orig_mod."


@dataclass
class GPTCheckpoint:
    path: Path
    config: GPTConfig
    tokenizer: GPTTokenizer
    weights: dict[str, torch.Tensor]


def checkpoint_entry(net: GPT, tokenizer_json: str) -> dict:
    return {"config": net.config.to_dict(), "tokenizer": tokenizer_json}


def read_gpt_checkpoint(path_value: str, key: str = "ckpt_path") -> GPTCheckpoint:
    checkpoint = load_checkpoint(path_value, key)
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not entry or "state_dict" not in checkpoint:
        raise UserError(
            f"{key}={path_value} is not a GPT checkpoint (it has no '{CHECKPOINT_KEY}' entry): give a "
            "checkpoints/*.ckpt of a run of experiment=gpt_tiny, gpt_small or gpt_sft"
        )
    weights = {name.replace(COMPILED_PREFIX, ""): value for name, value in net_state_dict(checkpoint).items()}
    config = gpt_config_of(entry.get("config"), f"{key}={path_value}")
    return GPTCheckpoint(Path(path_value), config, GPTTokenizer.from_str(entry["tokenizer"]), weights)


def gpt_config_of(values, what: str) -> GPTConfig:
    """The GPTConfig a checkpoint's entry holds: GPTConfig's own fields with plain values only
    (numbers, None), so the entry is data that builds the one GPT net, never a node to instantiate."""
    names = {f.name for f in fields(GPTConfig)}
    plain = isinstance(values, dict) and all(v is None or isinstance(v, (int, float)) for v in values.values())
    if not plain or set(values) - names:
        extra = sorted(set(values) - names) if isinstance(values, dict) else type(values).__name__
        raise UserError(
            f"{what}: its '{CHECKPOINT_KEY}' entry's config is not a GPTConfig of plain numbers ({extra}), so no net is built "
            "from it (a checkpoint carries weights and data, never code): give a checkpoint a GPT run wrote"
        )
    return GPTConfig(**values)


def load_weights(net: GPT, checkpoint: GPTCheckpoint, key: str) -> GPT:
    check_shapes(net, checkpoint.weights, f"{key}={checkpoint.path}")
    net.load_state_dict(checkpoint.weights, strict=True)
    return net


def build_net(checkpoint: GPTCheckpoint, key: str = "ckpt_path") -> GPT:
    return load_weights(GPT(checkpoint.config), checkpoint, key)


_resolved: dict[tuple, str] = {}


def resolve_init_from(init_from: str | None, base: dict | None) -> str | None:
    """The checkpoint a fine-tune starts from: `init_from` when given, else the checkpoint `base`
    names (a hylab.net_source.NetSource: a checkpoint, or an experiment's run from the run store,
    trained once if absent, then reused). The DataModule (for the tokenizer) and the module (for
    the weights) both ask; the second ask is answered from memory."""
    if init_from or not base or not (base.get("experiment") or base.get("checkpoint")):
        return init_from or None
    from hylab.checkpoints import source_checkpoint
    from hylab.net_source import net_source

    source = net_source(base, "model.base")
    key = (source.checkpoint, source.experiment, tuple(source.overrides), str(source.log_dir), str(source.store_dir))
    if key not in _resolved:
        import logging

        found = source_checkpoint(source)
        if source.experiment:
            logging.getLogger("hylab").info(
                f"base model: run {found.record['run_id']} of experiment={source.experiment} {' '.join(source.overrides)} "
                f"(store key {found.record['store_key']}, val/bpb_best {found.metrics.get('val/bpb_best')}) from {found.record['run_dir']}"
            )
        _resolved[key] = str(found.path)
    return _resolved[key]
