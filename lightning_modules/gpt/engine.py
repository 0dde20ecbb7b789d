"""Batched sampling from a GPT, with a KV cache (prefill the prompt once, then one token per step)
or without one (the whole sequence again each step); both draw the same tokens.

With the cache a step costs one token's worth of compute per row instead of the whole context:
the prompt is run once at batch size 1, its keys and values are copied to every row, and each new
token attends to the cached ones.
"""

from collections.abc import Iterator, Sequence

import torch

from lightning_modules.gpt.nets import GPT


class KVCache:
    """Keys and values of every layer for positions < pos, preallocated up to max_len."""

    def __init__(self, net: GPT, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device):
        c = net.config
        shape = (c.n_layer, batch_size, c.n_kv_head, max_len, c.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = 0

    @property
    def max_len(self) -> int:
        return self.k.size(3)

    def insert(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k, v (B, H_kv, T, d) after the cached ones; return all of them."""
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"the KV cache holds {self.max_len} positions; {end} were asked for")
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, steps: int) -> None:
        self.pos += steps

    def repeat_rows(self, batch_size: int) -> "KVCache":
        """A cache for `batch_size` rows holding copies of this one-row cache (after the prefill)."""
        other = object.__new__(KVCache)
        other.k = self.k.expand(-1, batch_size, -1, -1, -1).contiguous()
        other.v = self.v.expand(-1, batch_size, -1, -1, -1).contiguous()
        other.pos = self.pos
        return other


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None, top_p: float = 1.0) -> torch.Tensor:
    """One token per row from logits (B, V): argmax at temperature 0, else softmax(logits / t)
    restricted to the top_k largest, then to the smallest set whose probability reaches top_p
    (nucleus sampling, Holtzman et al. 2020; the most likely token is always kept)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        ordered, order = probs.sort(dim=-1, descending=True)
        outside = ordered.cumsum(dim=-1) - ordered >= top_p  # the mass before a token already reaches top_p
        probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    net: GPT,
    prompt: Sequence[int],
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    vocab_limit: int | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield one (num_samples,) column of new tokens per step.

    `vocab_limit` keeps sampling to ids the tokenizer knows (the net's vocabulary may be padded).
    The caller stops whenever it likes (e.g. at <|assistant_end|>)."""
    if not prompt:
        raise ValueError("the prompt must hold at least one token (e.g. <|bos|>)")
    total = len(prompt) + max_new_tokens
    if total > net.config.context_len:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceed the "
            f"{net.config.context_len} positions the model was trained on"
        )
    device = net.wte.weight.device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    tokens = torch.tensor([list(prompt)], dtype=torch.long, device=device)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if vocab_limit is not None and vocab_limit < logits.size(-1):
            logits = logits[:, :vocab_limit]
        return sample_next(logits, temperature, top_k, generator)

    if use_cache:
        prefill = KVCache(net, 1, total, net.wte.weight.dtype, device)
        logits = net(tokens, kv_cache=prefill)[:, -1].expand(num_samples, -1)
        cache = prefill.repeat_rows(num_samples)
        for _ in range(max_new_tokens):
            column = pick(logits)
            yield column
            logits = net(column[:, None], kv_cache=cache)[:, -1]
    else:
        sequence = tokens.expand(num_samples, -1)
        for _ in range(max_new_tokens):
            column = pick(net(sequence)[:, -1])
            yield column
            sequence = torch.cat([sequence, column[:, None]], dim=1)


def generate_tokens(net: GPT, prompt: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int] = (), **kwargs) -> list[list[int]]:
    """Whole completions, one list per sample, each cut after its first stop token (kept)."""
    rows = [[] for _ in range(kwargs.get("num_samples", 1))]
    done = [False] * len(rows)
    for column in generate(net, prompt, max_new_tokens, **kwargs):
        for row, token in enumerate(column.tolist()):
            if not done[row]:
                rows[row].append(token)
                done[row] = token in stop_ids
        if all(done):
            break
    return rows


class StreamingDecoder:
    """Turns tokens into text as they come: holds back an incomplete UTF-8 character (a byte-level
    token can end in the middle of one) until the next token completes it."""

    def __init__(self, decode):
        self.decode = decode
        self.ids: list[int] = []
        self.shown = ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        new, self.shown = text[len(self.shown) :], text
        return new
