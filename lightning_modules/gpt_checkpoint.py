"""What a GPT checkpoint carries besides the weights, and how to read it back without Hydra.

Every checkpoint the family writes holds checkpoint["gpt"] = {"config": GPTConfig as a dict,
"tokenizer": the tokenizer's JSON}: plain values, so `torch.load(weights_only=True)` reads it, and
a checkpoint alone is enough to chat with, generate from or fine-tune.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from datamodules.gpt_tokenizer import GPTTokenizer
from hylab.checks import check_checkpoint_file
from hylab.errors import UserError
from lightning_modules.nets.gpt import GPT, GPTConfig

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
    path = check_checkpoint_file(str(path_value), key)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{key}={path_value} could not be read as a checkpoint ({type(err).__name__}: {err})") from None
    entry = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not entry or "state_dict" not in checkpoint:
        raise UserError(
            f"{key}={path_value} is not a GPT checkpoint (it has no '{CHECKPOINT_KEY}' entry): give a "
            "checkpoints/*.ckpt of a run of experiment=gpt_tiny, gpt_small or gpt_sft"
        )
    weights = {}
    for name, value in checkpoint["state_dict"].items():
        if name.startswith("net."):
            weights[name[len("net.") :].replace(COMPILED_PREFIX, "")] = value
    return GPTCheckpoint(path, GPTConfig(**entry["config"]), GPTTokenizer.from_str(entry["tokenizer"]), weights)


def load_weights(net: GPT, checkpoint: GPTCheckpoint, key: str) -> GPT:
    try:
        net.load_state_dict(checkpoint.weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2] or [str(err)[:200]]
        raise UserError(f"{key}={checkpoint.path} does not fit this net: {first[0].strip()}") from None
    return net


def build_net(checkpoint: GPTCheckpoint, key: str = "ckpt_path") -> GPT:
    return load_weights(GPT(checkpoint.config), checkpoint, key)
