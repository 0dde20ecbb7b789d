"""hylab's GPT against a nanoGPT-shaped baseline on CPU: training tokens/s and held-out bits per
byte reached in equal wall time, in alternating rounds in one process (paired ratios).

    OMP_NUM_THREADS=1 uv run python -m bench.gpt_speed                   # 3 rounds x 60 s per net
    OMP_NUM_THREADS=1 uv run python -m bench.gpt_speed --rounds 5 --seconds 120
    OMP_NUM_THREADS=1 uv run python -m bench.gpt_speed --profile-only    # per-piece ms of one step
    OMP_NUM_THREADS=1 uv run python -m bench.gpt_speed --profile-only --compile   # + hylab under torch.compile
    OMP_NUM_THREADS=1 uv run python -m bench.gpt_speed --run-py          # + run.py against a plain loop
    uv run python -m bench.gpt_speed --dry-run paths.data_dir=/tmp/d     # seconds: a tiny shape, 1 round

Both nets get gpt_tiny's shape (the composed `experiment=gpt_tiny` config, overrides appended),
its tokenized data (the gpt datamodule's cache), the same batches in the same order, one thread,
the same wall-clock budget and gradient clipping (1.0). hylab trains with its own optimizer
(Muon for the block matrices, AdamW for the embedding and the head, the lrs of conf/model/gpt.yaml,
its warm-up + warm-down schedule); the baseline with nanoGPT's (AdamW, lr 1e-3, betas 0.9/0.99,
weight decay 0.1, warm-up then cosine to lr/10: nanoGPT's small-model recipe). Both schedules run
on the fraction of the budget spent, so each ends its decay when its time is up. The two nets
train in turn, one step each (so a change of load on a shared machine hits both alike), each
until its own training time reaches the budget; evaluation is outside it. Results go to bench/out/gpt_speed/ (or --out).
"""

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DRY_RUN = ["data.max_bytes=60000", "data.tokenizer_train_bytes=30000", "data.vocab_size=300", "data.sequence_len=32",
           "data.batch_size=4", "data.max_val_sequences=4", "model.net.config.n_layer=1", "model.net.config.n_embd=32",
           "model.net.config.n_head=2"]
WARMUP_STEPS = 10
BASELINE = {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1, "min_lr_ratio": 0.1}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import hylab.resolvers  # noqa: F401  (project_root)

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=["experiment=gpt_tiny", *overrides])


def load_data(cfg):
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def batches(dataset, batch_size: int, seed: int):
    """An endless stream of batches of whole windows in a seeded order (the same for both nets)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            windows = [dataset[i] for i in order[start : start + batch_size]]
            yield torch.stack([w[0] for w in windows]), torch.stack([w[1] for w in windows])


# ---- the two contestants -----------------------------------------------------------------------
class Contestant:
    """A net, its optimizer, and its lr factor as a function of (step, fraction of the budget spent)."""

    def __init__(self, name, net, optimizer, lr_factor, loss):
        self.name, self.net, self.optimizer, self.lr_factor, self.loss = name, net, optimizer, lr_factor, loss
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]

    def set_lr(self, step: int, progress: float) -> None:
        factor = min(1.0, (step + 1) / WARMUP_STEPS) * self.lr_factor(progress)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = lr * factor


def hylab_contestant(cfg, seed: int) -> Contestant:
    import torch
    from hydra.utils import instantiate

    from lightning_modules.gpt.optim import build_gpt_optimizer, warmdown_factor

    torch.manual_seed(seed)
    net = instantiate(cfg.model.net)
    optimizer = build_gpt_optimizer(net, instantiate(cfg.model.matrix_optimizer), instantiate(cfg.model.embedding_optimizer), cfg.model.head_lr)
    schedule = cfg.model.scheduler

    def lr_factor(progress: float) -> float:
        return warmdown_factor(round(progress * 1000), 1000, schedule.warmdown_ratio, schedule.final_lr_ratio)

    return Contestant("hylab", net, optimizer, lr_factor, hylab_loss(net))


def hylab_loss(net):
    """The loss exactly as GPTLanguageModel.training_step computes it."""
    from lightning_modules.gpt.losses import next_token_loss

    if hasattr(net, "loss"):
        return net.loss
    return lambda inputs, targets: next_token_loss(net(inputs), targets)


def baseline_contestant(cfg, seed: int) -> Contestant:
    import torch
    import torch.nn.functional as F

    from bench.nanogpt_baseline import NanoGPT, NanoGPTConfig, nanogpt_optimizer

    c = cfg.model.net.config
    torch.manual_seed(seed)
    net = NanoGPT(NanoGPTConfig(c.vocab_size, cfg.data.sequence_len, c.n_layer, c.n_head, c.n_embd))
    optimizer = nanogpt_optimizer(net, BASELINE["lr"], BASELINE["weight_decay"], BASELINE["betas"])

    def lr_factor(progress: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return BASELINE["min_lr_ratio"] + (1.0 - BASELINE["min_lr_ratio"]) * cosine

    def loss(inputs, targets):
        return F.cross_entropy(net(inputs).flatten(0, 1), targets.flatten())

    return Contestant("nanoGPT", net, optimizer, lr_factor, loss)


# ---- training and evaluation ---------------------------------------------------------------------
def train_step(contestant: Contestant, batch, step: int, progress: float) -> float:
    import torch

    inputs, targets = batch
    contestant.set_lr(step, progress)
    loss = contestant.loss(inputs, targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(contestant.net.parameters(), 1.0)
    contestant.optimizer.step()
    contestant.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def train_interleaved(contestants: list[Contestant], streams: list, seconds: float) -> list[dict]:
    """Train the nets step by step in turn, each until its own training time reaches `seconds`.
    On a shared machine the load changes by the second; interleaving single steps lets every
    change hit both nets alike, so their tokens/s ratio and equal-time comparison stay fair."""
    state = [{"steps": 0, "tokens": 0, "train_s": 0.0, "last_loss": float("nan")} for _ in contestants]
    for contestant in contestants:
        contestant.net.train()
    turn = 0
    while any(s["train_s"] < seconds for s in state):
        order = range(len(contestants)) if turn % 2 == 0 else reversed(range(len(contestants)))
        for i in order:
            s = state[i]
            if s["train_s"] >= seconds:
                continue
            batch = next(streams[i])
            started = time.perf_counter()
            s["last_loss"] = train_step(contestants[i], batch, s["steps"], s["train_s"] / seconds)
            s["train_s"] += time.perf_counter() - started
            s["steps"], s["tokens"] = s["steps"] + 1, s["tokens"] + batch[0].numel()
        turn += 1
    for s in state:
        s["tokens_per_s"] = s["tokens"] / s["train_s"]
    return state


def val_bpb(net, dataset, token_bytes, batch_size: int) -> float:
    """Bits per byte over the validation windows (the metric of val/bpb)."""
    import torch

    from lightning_modules.gpt.losses import next_token_loss
    from lightning_modules.gpt.metrics import BitsPerByte

    metric = BitsPerByte()
    net.eval()
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            windows = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
            inputs, targets = torch.stack([w[0] for w in windows]), torch.stack([w[1] for w in windows])
            metric.update(next_token_loss(net(inputs), targets, reduction="none"), targets.flatten(), token_bytes)
    return float(metric.compute()[1])


def paired_rounds(cfg, datamodule, rounds: int, seconds: float, seed: int) -> list[dict]:
    """Each round trains a fresh hylab net and a fresh baseline (seeded by the round) on the same
    batches, interleaved step by step, for `seconds` of training time each."""
    results = []
    train, val = datamodule.datasets["train"], datamodule.datasets["val"]
    for index in range(rounds):
        row = {"round": index + 1, "load": os.getloadavg()[0]}
        contestants = [hylab_contestant(cfg, seed + index), baseline_contestant(cfg, seed + index)]
        streams = [batches(train, cfg.data.batch_size, seed + index) for _ in contestants]
        for contestant, result in zip(contestants, train_interleaved(contestants, streams, seconds)):
            result["val_bpb"] = val_bpb(contestant.net, val, datamodule.token_bytes, cfg.data.batch_size)
            row[contestant.name] = result
            print(f"round {index + 1} {contestant.name}: {result}", flush=True)
        row["load"] = (row["load"] + os.getloadavg()[0]) / 2
        row["tokens_per_s_ratio"] = row["hylab"]["tokens_per_s"] / row["nanoGPT"]["tokens_per_s"]
        row["bpb_difference"] = row["hylab"]["val_bpb"] - row["nanoGPT"]["val_bpb"]
        results.append(row)
    return results


def rounds_table(rows: list[dict], seconds: float) -> str:
    lines = [f"{'round':>5} {'load':>5} {'hylab tok/s':>12} {'nanoGPT tok/s':>14} {'ratio':>6} "
             f"{'hylab bpb':>10} {'nanoGPT bpb':>12} {'hylab steps':>12} {'nanoGPT steps':>14}"]
    for r in rows:
        h, n = r["hylab"], r["nanoGPT"]
        lines.append(f"{r['round']:>5} {r['load']:>5.1f} {h['tokens_per_s']:>12,.0f} {n['tokens_per_s']:>14,.0f} "
                     f"{r['tokens_per_s_ratio']:>6.2f} {h['val_bpb']:>10.3f} {n['val_bpb']:>12.3f} {h['steps']:>12} {n['steps']:>14}")
    ratios = [r["tokens_per_s_ratio"] for r in rows]
    wins = sum(r["bpb_difference"] < 0 for r in rows)
    lines.append(f"tokens/s ratio hylab/nanoGPT: median {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}); "
                 f"val bpb after {seconds:g} s of training: hylab lower in {wins}/{len(rows)} rounds, median difference "
                 f"{statistics.median(r['bpb_difference'] for r in rows):+.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall time per net per round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile-only", action="store_true", help="only the per-piece profile of one training step")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--compile", action="store_true", help="profile also hylab's whole step under torch.compile")
    parser.add_argument("--run-py", action="store_true", help="also time run.py against a plain loop over the same net")
    parser.add_argument("--run-py-steps", type=int, default=60, help="training steps of each run of the run.py comparison")
    parser.add_argument("--dry-run", action="store_true", help="a tiny shape, 1 round of 1 s: checks the bench end to end")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "gpt_speed")
    parser.add_argument("overrides", nargs="*", help="overrides of the composed experiment=gpt_tiny config")
    args = parser.parse_args()
    overrides = [*(DRY_RUN if args.dry_run else []), *args.overrides]
    rounds, seconds = (1, 1.0) if args.dry_run else (args.rounds, args.seconds)

    import torch

    torch.set_num_threads(1)
    cfg = compose(overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"overrides": overrides, "threads": torch.get_num_threads(), "load_at_start": os.getloadavg()}
    text = [f"shape: {dict(cfg.model.net.config)} batch {cfg.data.batch_size}; threads {torch.get_num_threads()}; "
            f"load at start {os.getloadavg()[0]:.1f}"]
    if not args.no_profile:
        from bench.gpt_speed_profile import profile_pieces, profile_table

        report["profile"] = profile_pieces(cfg, repeats=1 if args.dry_run else 7, compiled=args.compile)
        text += ["", profile_table(report["profile"])]
    if not args.profile_only:
        datamodule = load_data(cfg)
        report["rounds"] = paired_rounds(cfg, datamodule, rounds, seconds, args.seed)
        text += ["", rounds_table(report["rounds"], seconds)]
        if args.run_py:
            from bench.gpt_speed_runpy import run_py_against_plain_loop

            report["run_py"] = run_py_against_plain_loop(cfg, datamodule, overrides, args.out, steps=5 if args.dry_run else args.run_py_steps)
            text += ["", report["run_py"]["table"]]
    text = "\n".join(text)
    print(text)
    (args.out / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (args.out / "results.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
