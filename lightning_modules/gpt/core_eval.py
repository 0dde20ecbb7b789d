"""Likelihood scoring the way DCLM's CORE (and nanochat's core_eval) scores a model.

For each choice i of an item, the prompt is `few-shot examples + context_i` and the model is
scored on the continuation_i tokens that follow:

    mean NLL_i = -(1 / |c_i|) * sum_{t in c_i} log p(token_t | tokens_<t)

- multiple choice (the same context, different continuations) and schema (different contexts,
  the same continuation; Winogrande): the prediction is argmin_i mean NLL_i;
- language modelling (LAMBADA): right when greedy decoding reproduces every continuation token.

A task's accuracy a (in [0, 1]) is centred on its random baseline b (the accuracy of a model that
answers at random) and normalized, so chance is 0 and a perfect model 1:

    centred = (a - b) / (1 - b)          CORE = mean of centred over the tasks

(Li et al. 2024, "DataComp-LM", arXiv:2406.11794, section 3.5 and appendix G). Few-shot examples
are other items of the same split, drawn with a seeded generator, joined by blank lines.

Prompts longer than the model's trained context lose tokens from the left (after <|bos|>), as in
nanochat. The choices of an item are scored in one batch; their shared token prefix (the few-shot
examples and the question) is run once into a KV cache and copied to every row.
"""

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from datamodules.gpt.benchmarks import Item
from lightning_modules.gpt.engine import KVCache


def centred(accuracy: float, random_baseline_percent: float) -> float:
    b = random_baseline_percent / 100
    return (accuracy - b) / (1 - b)


def fewshot_prefix(item_index: int, pool: Sequence[Item], shots: int, seed: int, exclude: Item | None = None) -> str:
    """`shots` gold examples from `pool` (never the item itself), drawn with a generator seeded
    by the item's index, each followed by a blank line."""
    if shots <= 0 or not pool:
        return ""
    rng = random.Random(seed + item_index)
    candidates = [i for i in range(len(pool)) if pool[i] is not exclude]
    chosen = rng.sample(candidates, min(shots, len(candidates)))
    return "".join(pool[i].gold_text() + "\n\n" for i in chosen)


def render(item: Item, prefix: str, encode: Callable[[str], list[int]], bos_id: int) -> list[tuple[list[int], int]]:
    """One (tokens, start of the continuation) per choice: <|bos|> prefix+context continuation.
    Context and continuation are encoded apart, so the continuation's tokens are exactly its own."""
    rows = []
    for context, continuation in zip(item.contexts, item.continuations):
        head = [bos_id, *encode(prefix + context)]
        rows.append((head + encode(continuation), len(head)))
    return rows


def crop(rows: list[tuple[list[int], int]], context_len: int) -> list[tuple[list[int], int]]:
    """Drop the same number of tokens after <|bos|> from every row so the longest fits; a
    continuation that alone is too long keeps its end."""
    longest = max(len(tokens) for tokens, _ in rows)
    cut = longest - context_len
    if cut <= 0:
        return rows
    return [([tokens[0], *tokens[1 + cut :]], max(1, start - cut)) for tokens, start in rows]


def shared_prefix(rows: list[tuple[list[int], int]]) -> int:
    """Tokens every row starts with, stopping before the first scored position of any row."""
    first = rows[0][0]
    limit = min(start for _, start in rows) - 1
    n = 0
    while n < limit and all(len(tokens) > n and tokens[n] == first[n] for tokens, _ in rows):
        n += 1
    return n


@dataclass
class Scored:
    mean_nll: float  # mean NLL of the continuation tokens (nats)
    greedy_match: bool  # greedy decoding reproduces the continuation


# A shared prefix shorter than this is recomputed per row: the cache copy costs more than it saves.
MIN_CACHED_PREFIX = 48


@torch.inference_mode()
def score_rows(net, rows: list[tuple[list[int], int]], use_cache: bool = True) -> list[Scored]:
    """Score each row's continuation tokens[start:] given tokens[:start], in one batch."""
    device = next(net.parameters()).device
    p = shared_prefix(rows) if use_cache and len(rows) > 1 else 0
    p = p if p >= MIN_CACHED_PREFIX else 0
    length = max(len(tokens) for tokens, _ in rows)
    batch = torch.zeros(len(rows), length, dtype=torch.long, device=device)
    for i, (tokens, _) in enumerate(rows):
        batch[i, : len(tokens)] = torch.tensor(tokens, device=device)
    if p > 0:
        prefill = KVCache(net, 1, length, next(net.parameters()).dtype, device)
        net(batch[:1, :p], kv_cache=prefill)
        logits = net(batch[:, p:], kv_cache=prefill.repeat_rows(len(rows)))  # positions p .. length-1
    else:
        logits = net(batch)
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    out = []
    for i, (tokens, start) in enumerate(rows):
        targets = batch[i, start : len(tokens)]
        predicted = log_probs[i, start - 1 - p : len(tokens) - 1 - p]  # the logits at t-1 predict token t
        nll = -predicted.gather(-1, targets[:, None]).squeeze(-1)
        out.append(Scored(nll.mean().item(), bool((predicted.argmax(-1) == targets).all().item())))
    return out


def is_correct(kind: str, scores: list[Scored], gold: int) -> bool:
    if kind == "lm":
        return scores[0].greedy_match
    nlls = [s.mean_nll for s in scores]
    return nlls.index(min(nlls)) == gold


def evaluate_items(
    net, items: Sequence[Item], pool: Sequence[Item], kind: str, shots: int, encode, bos_id: int,
    context_len: int, seed: int = 1234, use_cache: bool = True, progress=None,
) -> float:
    """Accuracy of `net` on the items of a likelihood task (`kind` "choice" or "lm")."""
    correct = 0
    for index, item in enumerate(items):
        prefix = fewshot_prefix(index, pool, shots, seed, exclude=item)
        rows = crop(render(item, prefix, encode, bos_id), context_len)
        correct += is_correct(kind, score_rows(net, rows, use_cache), item.gold)
        if progress is not None:
            progress()
    return correct / max(1, len(items))
