"""Tool calls under load: do one reply's tool calls hold up the others' first tokens?

    uv run python -m bench.gpt_serve --chats 32 --tool-chats 8

32 chats on the real server (uvicorn, the round-robin worker, max_active 32); chats 0-7 start
first and call the Python tool (the real sandbox, a computation of about half a second), the
other 24 arrive one every 50 ms while those calls run. Three conditions, alternated round by
round in one process: no tool calls (chats 0-7 answer without the tool), tool calls in the tool
pool (the server as it is), and tool calls in the generation thread (how it was before). The
latencies are those of the 24 chats that do not call the tool, as their client sees them.
The net is random, so the 8 calls are scripted: the sampler of chats 0-7 is made to write
`<|python_start|>CODE<|python_end|>` first; everything else is the real path.
"""

import functools
import statistics
import threading
import time

import torch

from lightning_modules.gpt import tools

CODE = "sum(i * i for i in range(1_500_000))"
CONDITIONS = ("no tool calls", "tool calls in the pool (now)", "tool calls in the generation thread (before)")
SCRIPT = threading.local()


def scripted_sampler(original):
    """sample_next, except while the current reply has scripted tokens left."""

    def sample(logits, *args):
        script = getattr(SCRIPT, "tokens", None)
        token = next(script, None) if script is not None else None
        return original(logits, *args) if token is None else torch.tensor([token] * logits.size(0))

    return sample


def tagged(inner, script):
    """Step `inner` with `script` as the current reply's scripted tokens."""
    while True:
        SCRIPT.tokens = script
        try:
            piece = next(inner)
        except StopIteration as end:
            return end.value
        finally:
            SCRIPT.tokens = None
        yield piece


def make_streams(net, tokenizer, worker, condition: int, tool_chats: int):
    from datamodules.gpt.tokenizer import PYTHON_END, PYTHON_START

    pooled = worker.make_stream  # build_server's: tool calls submitted to its pool
    inline = functools.partial(tools.reply_pieces, net, tokenizer, run_tool=functools.partial(tools.run_in_sandbox, wall_s=3.0))
    plain = functools.partial(tools.reply_pieces, net, tokenizer, run_tool=None)
    call = [tokenizer.id_of(PYTHON_START), *tokenizer.encode(CODE), tokenizer.id_of(PYTHON_END)]

    def make(prompt, sampling):
        if sampling.seed is None or sampling.seed >= tool_chats or condition == 0:
            return plain(prompt, sampling)
        return tagged((pooled if condition == 1 else inline)(prompt, sampling), iter(call))

    return make


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def one_round(port: int, chats: int, tool_chats: int, max_tokens: int, stream) -> tuple[list[float], list[float], int]:
    """First-token and whole-reply seconds of the chats that do not call the tool; replies with a tool output."""
    first, full, calls = {}, {}, []

    def chat(i: int) -> None:
        body = {"messages": [{"role": "user", "content": "What is 23 times 19?"}], "max_tokens": max_tokens, "temperature": 1.0, "seed": i}
        arrivals = list(stream(port, "/api/chat", body))
        times = [t for t, e in arrivals if e["type"] == "token" and e["text"]]
        first[i], full[i] = (times[0] if times else arrivals[-1][0]), arrivals[-1][0]
        calls.extend([i] if any(e.get("kind") == "output" and e["text"] for _, e in arrivals) else [])

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(chats)]
    for i, thread in enumerate(threads):
        if i >= tool_chats:
            time.sleep(0.05)  # the others arrive while the tool calls run
        thread.start()
    for thread in threads:
        thread.join()
    others = range(tool_chats, chats)
    return [first[i] for i in others], [full[i] for i in others], len(calls)


def run(net, tokenizer, name: str, chats: int, tool_chats: int, max_tokens: int, rounds: int) -> dict:
    import os

    from lightning_modules.gpt.serve.client import running, stream
    from lightning_modules.gpt.serve.settings import ServeSettings
    from lightning_modules.gpt.serve.task import build_server

    if not tokenizer.has_tools:
        raise SystemExit("the tokenizer has no tool tokens (version 1): use a newer checkpoint or none")
    original = tools.sample_next
    tools.sample_next = scripted_sampler(original)
    app, worker = build_server(net, tokenizer, name, ServeSettings(max_active=chats, max_queue=2 * chats))
    streams = [make_streams(net, tokenizer, worker, c, tool_chats) for c in range(len(CONDITIONS))]
    results = {c: {"first": [], "full": [], "calls": 0, "p50_by_round": []} for c in range(len(CONDITIONS))}
    loads = []
    try:
        with running(app, worker) as port:
            worker.make_stream = streams[0]
            one_round(port, 4, 0, 8, stream)  # warm-up
            for _ in range(rounds):
                for c in range(len(CONDITIONS)):
                    worker.make_stream = streams[c]
                    first, full, calls = one_round(port, chats, tool_chats, max_tokens, stream)
                    results[c]["first"] += first
                    results[c]["full"] += full
                    results[c]["calls"] += calls
                    results[c]["p50_by_round"].append(statistics.median(first))
                    loads.append(os.getloadavg()[0])
    finally:
        tools.sample_next = original
    summary = {}
    for c, label in enumerate(CONDITIONS):
        r = results[c]
        summary[label] = {
            "first_token_p50_s": percentile(r["first"], 0.5), "first_token_p90_s": percentile(r["first"], 0.9),
            "full_reply_p50_s": percentile(r["full"], 0.5), "tool_calls": r["calls"],
            "p50_ratio_to_no_tools_by_round": [a / b for a, b in zip(r["p50_by_round"], results[0]["p50_by_round"])],
        }
    return {"chats": chats, "tool_chats": tool_chats, "rounds": rounds, "max_tokens": max_tokens, "code": CODE,
            "load_1min": [round(v, 1) for v in loads], "cpus": os.cpu_count(), "conditions": summary}


def print_table(result: dict) -> None:
    print(f"{result['chats']} chats ({result['tool_chats']} call the tool: {result['code']}), {result['rounds']} rounds per condition, "
          f"alternating; max_tokens {result['max_tokens']}; load average {min(result['load_1min'])}-{max(result['load_1min'])} "
          f"on {result['cpus']} CPUs; latencies of the {result['chats'] - result['tool_chats']} chats without tool calls")
    print("| condition | replies with a tool output | first token p50 | p90 | full reply p50 | p50 / no tools, per round |\n|---|---|---|---|---|---|")
    for label, r in result["conditions"].items():
        ratios = ", ".join(f"{v:.2f}" for v in r["p50_ratio_to_no_tools_by_round"])
        print(f"| {label} | {r['tool_calls']} | {r['first_token_p50_s']:.2f} s | {r['first_token_p90_s']:.2f} s | {r['full_reply_p50_s']:.2f} s | {ratios} |")
