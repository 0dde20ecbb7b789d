"""Latency of task=serve under N concurrent chats on this machine: time to the first streamed token
and to the end of the reply, as a client measures them over HTTP (p50 / p90 / max).

    uv run python -m bench.gpt_serve --ckpt logs/gpt_sft/runs/<run>/checkpoints/last.ckpt
    uv run python -m bench.gpt_serve --chats 8 --max-tokens 64        # a random gpt_tiny-sized net

The server is the real app (uvicorn on a loopback port, the queued round-robin worker); the N
chats start together, each in its own thread, with different questions and seeds. Printed as a
markdown table; results also go to bench/out/gpt_serve.json.

    uv run python -m bench.gpt_serve --chats 32 --tool-chats 8   # do tool calls hold up the others?

With --tool-chats K, K of the chats call the Python tool while the others arrive, and the others'
latencies are compared with and without tool calls (bench/gpt_serve_tools.py says how).
"""

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["What is 12 plus 30?", "Mia has 47 marbles and buys 38 more. How many marbles does Mia have now?",
             "What is 23 times 19?", "A box holds 14 eggs. How many eggs are in 6 boxes?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def load(ckpt: str | None):
    if ckpt:
        from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint

        gpt = read_gpt_checkpoint(ckpt)
        return build_net(gpt).eval(), gpt.tokenizer, Path(ckpt).parent.parent.name
    import torch

    from datamodules.gpt.tokenizer import GPTTokenizer, train_bpe
    from lightning_modules.gpt.nets import GPT, GPTConfig

    texts = [(ROOT / "README.md").read_text(), (ROOT / "docs" / "gpt.md").read_text()]
    tokenizer = GPTTokenizer(train_bpe(texts, 4096))
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=4096, sequence_len=256, n_layer=4, n_head=4, n_embd=128))
    return net.eval(), tokenizer, "random-gpt_tiny-size"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="batches of --chats concurrent chats")
    parser.add_argument("--tool-chats", type=int, default=0, help="this many of the chats call the tool (see bench/gpt_serve_tools.py)")
    args = parser.parse_args()
    if args.tool_chats:
        from bench.gpt_serve_tools import print_table, run

        net, tokenizer, name = load(args.ckpt)
        result = run(net, tokenizer, name, args.chats, args.tool_chats, args.max_tokens, args.rounds)
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpt_serve_tools.json").write_text(json.dumps(result, indent=2) + "\n")
        print_table(result)
        return

    from lightning_modules.gpt.serve.client import running, stream
    from lightning_modules.gpt.serve.settings import ServeSettings
    from lightning_modules.gpt.serve.task import build_server

    net, tokenizer, name = load(args.ckpt)
    app, worker = build_server(net, tokenizer, name, ServeSettings(max_active=args.chats, max_queue=2 * args.chats, max_new_tokens=args.max_tokens))
    first, full, tokens = [], [], []

    def chat(i: int, port: int) -> None:
        body = {"messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "max_tokens": args.max_tokens,
                "temperature": 1.0, "seed": i}
        arrivals = [(t, e) for t, e in stream(port, "/api/chat", body)]
        token_times = [t for t, e in arrivals if e["type"] == "token"]
        first.append(token_times[0] if token_times else arrivals[-1][0])
        full.append(arrivals[-1][0])
        tokens.append(arrivals[-1][1]["usage"]["completion_tokens"])

    with running(app, worker) as port:
        chat(0, port)  # warm-up
        first.clear(), full.clear(), tokens.clear()
        started = time.perf_counter()
        for _ in range(args.rounds):
            threads = [threading.Thread(target=chat, args=(i, port)) for i in range(args.chats)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        wall = time.perf_counter() - started
    load_1 = os.getloadavg()[0]
    result = {
        "model": name, "parameters": net.num_parameters(), "chats": args.chats, "rounds": args.rounds,
        "max_tokens": args.max_tokens, "mean_reply_tokens": statistics.mean(tokens), "load_1min": load_1, "cpus": os.cpu_count(),
        "first_token_s": {q: percentile(first, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("max", 1.0))},
        "full_reply_s": {q: percentile(full, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("max", 1.0))},
        "tokens_per_s_total": sum(tokens) / wall,
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpt_serve.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}, {net.num_parameters() / 1e6:.2f}M parameters, {args.chats} concurrent chats x {args.rounds} rounds, "
          f"{result['mean_reply_tokens']:.0f} tokens per reply on average, load average {load_1:.1f} on {os.cpu_count()} CPUs")
    print("| | p50 | p90 | max |\n|---|---|---|---|")
    for label, key in (("first token (s)", "first_token_s"), ("full reply (s)", "full_reply_s")):
        print(f"| {label} | " + " | ".join(f"{result[key][q]:.2f}" for q in ("p50", "p90", "max")) + " |")
    print(f"total throughput: {result['tokens_per_s_total']:.0f} tokens/s")


if __name__ == "__main__":
    main()
