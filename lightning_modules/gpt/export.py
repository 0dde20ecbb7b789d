"""task=export: a GPT checkpoint as a Hugging Face folder that `transformers` loads offline.

    python run.py experiment=gpt_sft task=export ckpt_path=<run>/checkpoints/last.ckpt

writes into <run dir>/hf (or export.dir):

    config.json               transformers' native `nanochat` architecture with our shape
    generation_config.json    bos, the tokens that end a reply (where task=chat stops)
    model.safetensors         the weights under transformers' names (WEIGHT_NAMES)
    tokenizer.json            the family's byte-level BPE with its control tokens; encoding a
                              text prepends <|bos|>, as task=generate does
    tokenizer_config.json     with the chat template (chat_template.jinja): the token ids of
                              datamodules/gpt/chat.py's rendering
    README.md                 how to load it

Our net is exactly transformers' NanoChatForCausalLM (both descend from nanochat): a
parameter-free RMSNorm after the embedding, before attention and the MLP and before the head;
rotary positions with nanochat's sign, then QK-norm; a ReLU² MLP; no biases; an untied head with
the logit soft-cap c * tanh(z / c). So the folder needs no code of ours (no trust_remote_code).
Nothing here imports transformers (a dev dependency only); the folder is written beside the
target and moved into place, so a failed export leaves nothing half-written.
"""

import json
import re
import shutil
from pathlib import Path

from omegaconf import DictConfig

from datamodules.gpt.tokenizer import ASSISTANT_END, BOS, SPECIAL_TOKENS, TOOL_TOKENS
from hylab.errors import UserError
from hylab.settings import parse_settings
from hylab.tasks import TaskResult
from lightning_modules.gpt.settings import ExportSettings, GPTConfig

CHAT_TEMPLATE = Path(__file__).resolve().parent / "chat_template.jinja"
ARCHITECTURE = "NanoChatForCausalLM"
# our parameter name (regex) -> transformers' NanoChat name
WEIGHT_NAMES = [
    (r"wte\.weight", "model.embed_tokens.weight"),
    (r"blocks\.(\d+)\.attn\.c_q\.weight", r"model.layers.\1.self_attn.q_proj.weight"),
    (r"blocks\.(\d+)\.attn\.c_k\.weight", r"model.layers.\1.self_attn.k_proj.weight"),
    (r"blocks\.(\d+)\.attn\.c_v\.weight", r"model.layers.\1.self_attn.v_proj.weight"),
    (r"blocks\.(\d+)\.attn\.c_proj\.weight", r"model.layers.\1.self_attn.o_proj.weight"),
    (r"blocks\.(\d+)\.mlp\.c_fc\.weight", r"model.layers.\1.mlp.fc1.weight"),
    (r"blocks\.(\d+)\.mlp\.c_proj\.weight", r"model.layers.\1.mlp.fc2.weight"),
    (r"lm_head\.weight", "lm_head.weight"),
]
FLOAT32_EPS = 1.1920928955078125e-07  # torch.finfo(torch.float32).eps: F.rms_norm's eps in our net


def hf_name(name: str) -> str:
    for pattern, replacement in WEIGHT_NAMES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    raise ValueError(f"no transformers name for the GPT parameter {name!r}")


def export_settings(cfg: DictConfig) -> ExportSettings:
    if cfg.get("export") is None:
        raise UserError("task=export reads its settings from `export`: add `- /export: gpt` to the experiment's defaults")
    return parse_settings(ExportSettings, cfg.export, "export")


def target_dir(cfg: DictConfig, settings: ExportSettings) -> Path:
    out = Path(settings.dir).expanduser() if settings.dir else Path(cfg.paths.output_dir) / "hf"
    if out.exists() and not out.is_dir():
        raise UserError(f"export.dir={out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not settings.overwrite:
        raise UserError(f"export.dir={out} is not empty: give another folder or export.overwrite=true")
    return out


def hf_config(config: GPTConfig, dtype: str, bos_id: int, stop_ids: list[int]) -> dict:
    """config.json: transformers' NanoChatConfig for our net's shape."""
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "nanochat",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_ratio * config.n_embd,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.context_len,
        "hidden_act": "relu2",
        "rms_norm_eps": FLOAT32_EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_base},
        "final_logit_softcapping": config.logit_softcap or None,
        "attention_bias": False,
        "tie_word_embeddings": False,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": stop_ids,
        "pad_token_id": stop_ids[0],
        "dtype": dtype,
    }


def generation_config(tokenizer, config: GPTConfig, stop_ids: list[int]) -> dict:
    """Greedy by default; a reply ends at any chat control token (task=chat stops there too);
    ids the net has beyond the tokenizer's vocabulary are never sampled (engine's vocab_limit).
    The pad id is an end id, so generate() never mistakes a prompt's own tokens for padding."""
    settings = {"bos_token_id": tokenizer.bos_id, "eos_token_id": stop_ids, "pad_token_id": stop_ids[0]}
    if config.vocab_size > tokenizer.vocab_size:
        settings["suppress_tokens"] = list(range(tokenizer.vocab_size, config.vocab_size))
    return settings


def hf_tokenizer_json(tokenizer) -> str:
    """The family's tokenizer with every control token it has as a special added token (so a
    chat template's "<|user_start|>" is one id) and <|bos|> prepended to an encoded text."""
    from tokenizers import AddedToken, Tokenizer, processors

    hf = Tokenizer.from_str(tokenizer.to_str())
    controls = [token for token in SPECIAL_TOKENS + TOOL_TOKENS if tokenizer.id_of(token) is not None]
    hf.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in controls])
    hf.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, tokenizer.bos_id)]
    )
    return hf.to_str()


def tokenizer_config(config: GPTConfig) -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": ASSISTANT_END,
        "pad_token": ASSISTANT_END,  # only ever under a zero attention mask
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config.context_len,
        "padding_side": "left",  # decoder-only: a batch is padded on the left to generate
        "chat_template": CHAT_TEMPLATE.read_text(),
    }


def model_card(config: GPTConfig, parameters: int, checkpoint: str) -> str:
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [nanochat, hylab]
---

# hylab GPT

A {parameters / 1e6:.2f}M-parameter GPT ({config.n_layer} layers, width {config.n_embd}, context {config.context_len})
exported by hylab's `task=export` from `{checkpoint}`.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

model = AutoModelForCausalLM.from_pretrained(FOLDER)  # transformers' NanoChatForCausalLM
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
chat = pipeline("text-generation", model=FOLDER)
chat([{{"role": "user", "content": "What does `json.dumps` do?"}}], max_new_tokens=64)
```

The chat template renders hylab's own format. The model was trained on {config.context_len} positions:
keep the prompt and the new tokens within them. The Python tool the model may call
(<|python_start|> ... <|python_end|>) is not run by transformers.
"""


def write_folder(out: Path, checkpoint, net, settings: ExportSettings) -> int:
    """Write everything into a sibling folder, then move it into place; returns its size in bytes."""
    import torch
    from safetensors.torch import save_file

    tokenizer, config = checkpoint.tokenizer, net.config
    stop_ids = [tokenizer.id_of(ASSISTANT_END), *(tokenizer.id_of(t) for t in SPECIAL_TOKENS if t != ASSISTANT_END)]
    dtype = getattr(torch, settings.dtype)
    weights = {hf_name(name): tensor.detach().to("cpu", dtype).contiguous() for name, tensor in net.state_dict().items()}
    texts = {
        "config.json": json.dumps(hf_config(config, settings.dtype, tokenizer.bos_id, stop_ids), indent=2) + "\n",
        "generation_config.json": json.dumps(generation_config(tokenizer, config, stop_ids), indent=2) + "\n",
        "tokenizer_config.json": json.dumps(tokenizer_config(config), indent=2, ensure_ascii=False) + "\n",
        "tokenizer.json": hf_tokenizer_json(tokenizer),
        "README.md": model_card(config, net.num_parameters(), str(checkpoint.path)),
    }
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_file(weights, str(staging / "model.safetensors"), metadata={"format": "pt"})
        (staging / "model.safetensors").chmod(0o644)  # safetensors creates it private
        for name, text in texts.items():
            (staging / name).write_text(text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return sum(path.stat().st_size for path in out.iterdir())


def export(cfg: DictConfig) -> TaskResult:
    settings = export_settings(cfg)
    if not cfg.get("ckpt_path"):
        raise UserError("task=export converts a trained model: add ckpt_path=<run dir>/checkpoints/last.ckpt")
    out = target_dir(cfg, settings)
    from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint

    checkpoint = read_gpt_checkpoint(cfg.ckpt_path)
    net = build_net(checkpoint).eval()
    size = write_folder(out, checkpoint, net, settings)
    import logging

    logging.getLogger("hylab").info(f"exported {cfg.ckpt_path} to {out} ({size / 1e6:.1f} MB); load it with "
                                    f"AutoModelForCausalLM.from_pretrained('{out}')")
    metrics = {"export/parameters": float(net.num_parameters()), "export/bytes": float(size)}
    return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)}, extra={"export_dir": str(out)})
