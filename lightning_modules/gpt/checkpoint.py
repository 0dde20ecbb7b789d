"""What a GPT checkpoint carries besides the weights, and how to read it back without Hydra.

Every checkpoint the family writes holds checkpoint["gpt"] = {"config": GPTConfig as a dict,
"tokenizer": the tokenizer's JSON}: plain values, so `torch.load(weights_only=True)` reads it, and
a checkpoint alone is enough to chat with, generate from or fine-tune. The net is rebuilt from
that entry, not from the run's embedded config: a chat fine-tune has `model.net: null` there, and
the entry names no code path, so checkpoints written before the family became a package load too.
Reading the file and the weights is hylab.checkpoints'.
"""

from dataclasses import dataclass
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
    return GPTCheckpoint(Path(path_value), GPTConfig(**entry["config"]), GPTTokenizer.from_str(entry["tokenizer"]), weights)


def load_weights(net: GPT, checkpoint: GPTCheckpoint, key: str) -> GPT:
    check_shapes(net, checkpoint.weights, f"{key}={checkpoint.path}")
    net.load_state_dict(checkpoint.weights, strict=True)
    return net


def build_net(checkpoint: GPTCheckpoint, key: str = "ckpt_path") -> GPT:
    return load_weights(GPT(checkpoint.config), checkpoint, key)
