"""The GPT family's tasks that are not a Trainer loop (registered in conf/tasks/gpt.yaml):

    task=train_tokenizer   train the BPE of data=gpt_* and report bytes per token on held-out text
    task=generate          ckpt_path=... generation.prompt="..."   prompt in, text out (stdout)
    task=chat              ckpt_path=...   an interactive chat in the terminal
"""

import json
import logging
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from datamodules.gpt.tokenizer import ASSISTANT_START, SPECIAL_TOKENS, describe, evaluate_tokenizer
from hylab.errors import UserError
from hylab.instantiate import build
from hylab.records import atomic_write_text
from hylab.settings import parse_settings
from hylab.tasks import TaskResult
from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint
from lightning_modules.gpt.engine import StreamingDecoder, generate, generate_tokens
from lightning_modules.gpt.settings import GenerationSettings

log = logging.getLogger("hylab")


def train_tokenizer(cfg: DictConfig) -> TaskResult:
    from datamodules.gpt.datamodule import TextDataModule

    datamodule = build(cfg.data)
    if not isinstance(datamodule, TextDataModule):
        raise UserError("task=train_tokenizer trains on a text corpus: use data=gpt_text, gpt_austen or gpt_pydocs")
    started = time.perf_counter()
    tokenizer = datamodule.train_tokenizer()
    seconds = time.perf_counter() - started
    path = tokenizer.save(Path(cfg.paths.output_dir) / "tokenizer.json")
    metrics = evaluate_tokenizer(tokenizer, [doc.text for doc in datamodule.val_documents])
    metrics["tokenizer/train_seconds"] = seconds
    log.info(describe(metrics))
    return TaskResult(metrics=metrics, extra={"tokenizer": str(path), "cached_at": str(datamodule.cache_dir())})


def generation_settings(cfg: DictConfig) -> GenerationSettings:
    if cfg.get("generation") is None:
        raise UserError(f"task={cfg.task} reads the sampling settings from `generation`: add `- /generation: gpt` to the experiment's defaults")
    return parse_settings(GenerationSettings, cfg.generation, "generation")


def load_for_sampling(cfg: DictConfig):
    if not cfg.get("ckpt_path"):
        raise UserError(f"task={cfg.task} samples from a trained model: add ckpt_path=<run dir>/checkpoints/last.ckpt")
    checkpoint = read_gpt_checkpoint(cfg.ckpt_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_net(checkpoint).to(device).eval()
    return net, checkpoint.tokenizer


def generate_text(cfg: DictConfig) -> TaskResult:
    net, tokenizer = load_for_sampling(cfg)
    g = generation_settings(cfg)
    prompt = [tokenizer.bos_id, *tokenizer.encode(g.prompt)]
    max_new_tokens = g.max_new_tokens or net.config.context_len - len(prompt)  # None: what the context leaves
    started = time.perf_counter()
    try:
        rows = generate_tokens(
            net, prompt, max_new_tokens, stop_ids=[tokenizer.bos_id], num_samples=g.num_samples,
            temperature=g.temperature, top_k=g.top_k, seed=g.seed, vocab_limit=tokenizer.vocab_size, use_cache=g.use_cache,
        )
    except ValueError as err:
        raise UserError(f"generation: {err}; shorten generation.prompt or lower generation.max_new_tokens") from None
    seconds = time.perf_counter() - started
    texts = [g.prompt + tokenizer.decode(row, skip_special=True) for row in rows]
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i}")
        print(text, flush=True)
    path = Path(cfg.paths.output_dir) / "generations.json"
    atomic_write_text(path, json.dumps({"settings": asdict(g), "checkpoint": str(cfg.ckpt_path), "texts": texts}, indent=2) + "\n")
    new_tokens = sum(len(row) for row in rows)
    metrics = {"generate/new_tokens": new_tokens, "generate/tokens_per_sec": new_tokens / max(seconds, 1e-9)}
    return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)}, extra={"generations": str(path)})


def fit_to_context(tokenizer, conversation: list, max_new_tokens: int, context_len: int) -> list[int]:
    """The prompt for the next reply, dropping the oldest exchanges until reply room is left.

    A single message that is still too long keeps its frame (<|bos|><|user_start|> ...
    <|user_end|><|assistant_start|>) and loses the start of its text."""
    from datamodules.gpt.chat import render_for_reply

    budget = context_len - max_new_tokens
    while True:
        prompt = render_for_reply(tokenizer, conversation)
        if len(prompt) <= budget:
            return prompt
        if len(conversation) <= 1:
            head, tail = prompt[:2], prompt[-2:]
            keep = max(0, budget - len(head) - len(tail))
            return [*head, *prompt[len(head) : -len(tail)][len(prompt) - len(head) - len(tail) - keep :], *tail]
        conversation[:] = conversation[2:]


def stream_reply(net, tokenizer, prompt: list[int], g: GenerationSettings, out) -> list[int]:
    """Print the reply token by token as it is sampled; stop at any special token."""
    stops = {tokenizer.id_of(token) for token in SPECIAL_TOKENS}
    decoder, reply = StreamingDecoder(tokenizer.decode), []
    for column in generate(
        net, prompt, g.max_new_tokens, temperature=g.temperature, top_k=g.top_k,
        seed=g.seed, vocab_limit=tokenizer.vocab_size, use_cache=g.use_cache,
    ):
        token = int(column[0])
        if token in stops:
            break
        reply.append(token)
        out.write(decoder.push(token))
        out.flush()
    return reply


def chat(cfg: DictConfig) -> TaskResult:
    net, tokenizer = load_for_sampling(cfg)
    g = generation_settings(cfg)
    context_len = net.config.context_len  # the trained context, not the whole rotary table
    room = min(g.max_new_tokens or context_len // 2, context_len // 2)  # old exchanges are dropped to leave this
    if tokenizer.id_of(ASSISTANT_START) is None:
        raise UserError(f"ckpt_path={cfg.ckpt_path} has a tokenizer without chat tokens")
    out = sys.stdout
    out.write(f"Chatting with {cfg.ckpt_path} ({net.num_parameters() / 1e6:.1f}M parameters). "
              "Type a message and press Enter; /clear starts over, /exit or Ctrl-D quits.\n")
    replier = stream_reply
    if tokenizer.has_tools:  # a version-2 tokenizer: the model may call the Python tool
        from lightning_modules.gpt.tools import stream_reply_with_tools as replier
    conversation, turns = [], 0
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/clear":
            conversation = []
            out.write("(conversation cleared)\n")
            continue
        conversation.append({"role": "user", "content": text})
        prompt = fit_to_context(tokenizer, conversation, room, context_len)
        reply_settings = replace(g, max_new_tokens=min(g.max_new_tokens or context_len, context_len - len(prompt)))
        out.write("gpt> ")
        out.flush()
        try:
            reply = replier(net, tokenizer, prompt, reply_settings, out)
        except KeyboardInterrupt:
            reply = []
            out.write(" [interrupted]")
        out.write("\n")
        conversation.append({"role": "assistant", "content": tokenizer.decode(reply)})
        turns += 1
    return TaskResult(metrics={"chat/turns": turns}, checkpoints={"evaluated": str(cfg.ckpt_path)})
