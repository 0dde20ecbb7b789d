"""Generative benchmarks: GSM8K (exact match of the final number) and HumanEval (pass@1 of the
greedy completion, run against the problem's tests in the tool sandbox, sandbox.py).

Both decode greedily with the KV cache until a stop string, within the model's trained context
(the prompt loses tokens from the left, after <|bos|>, to leave room for the answer).
"""

import re
from collections.abc import Sequence

from datamodules.gpt.benchmarks import Item
from hylab.errors import UserError
from lightning_modules.gpt.sandbox import run_python
from lightning_modules.gpt.engine import generate

GSM8K_STOPS = ("\n\n", "Question:")
HUMANEVAL_STOPS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert")
NUMBER = re.compile(r"-?[\d,]*\.?\d+")


def complete(net, tokenizer, prompt: str, max_new_tokens: int, stops: Sequence[str]) -> str:
    """The greedy completion of `prompt`, cut at the first stop string (or a special token)."""
    context_len = net.config.context_len
    max_new_tokens = min(max_new_tokens, context_len // 2)
    ids = [tokenizer.bos_id, *tokenizer.encode(prompt)]
    keep = context_len - max_new_tokens
    if len(ids) > keep:
        ids = [ids[0], *ids[len(ids) - keep + 1 :]]
    new: list[int] = []
    for column in generate(net, ids, max_new_tokens, temperature=0.0, vocab_limit=tokenizer.vocab_size):
        token = int(column[0])
        if token in tokenizer.special_ids:
            break
        new.append(token)
        text = tokenizer.decode(new)
        if any(stop in text for stop in stops):
            break
    text = tokenizer.decode(new)
    cut = min([text.index(s) for s in stops if s in text], default=len(text))
    return text[:cut]


def gsm8k_answer(completion: str) -> str | None:
    """The number after "the answer is", else the last number in the completion."""
    match = re.search(r"answer is\s*\$?(" + NUMBER.pattern + ")", completion)
    numbers = [match.group(1)] if match else NUMBER.findall(completion)
    if not numbers:
        return None
    return numbers[-1].replace(",", "").rstrip(".")


def same_number(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return float(a) == float(b.replace(",", ""))
    except ValueError:
        return a == b


def evaluate_gsm8k(net, tokenizer, items: Sequence[Item], max_new_tokens: int, progress=None, samples: list | None = None) -> float:
    correct = 0
    for item in items:
        completion = complete(net, tokenizer, item.contexts[0], max_new_tokens, GSM8K_STOPS)
        ok = same_number(gsm8k_answer(completion), item.extra["answer"])
        correct += ok
        if samples is not None and len(samples) < 3:
            samples.append({"completion": completion, "answer": item.extra["answer"], "correct": ok})
        if progress is not None:
            progress()
    return correct / max(1, len(items))


def humaneval_program(item: Item, completion: str) -> str:
    return f"{item.contexts[0]}{completion}\n\n{item.extra['test']}\n\ncheck({item.extra['entry_point']})\n"


def evaluate_humaneval(net, tokenizer, items: Sequence[Item], max_new_tokens: int, timeout_s: float,
                       progress=None, samples: list | None = None) -> float:
    passed = 0
    for item in items:
        completion = complete(net, tokenizer, item.contexts[0], max_new_tokens, HUMANEVAL_STOPS)
        outcome = run_python(humaneval_program(item, completion), wall_s=timeout_s, cpu_s=max(1.0, timeout_s), memory_mb=1024)
        if outcome.status == "unavailable":  # no sandbox: no score, rather than 0 % for code never run
            raise UserError(f"HumanEval runs the completions in the sandbox: {outcome.error}")
        passed += outcome.ok  # finished: the tests ran and exited 0
        if samples is not None and len(samples) < 3:
            samples.append({"task_id": item.extra["task_id"], "completion": completion, "status": outcome.status})
        if progress is not None:
            progress()
    return passed / max(1, len(items))
