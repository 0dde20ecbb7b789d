"""Each hybrid lever in the setting where its paper says it helps, with every setting stated.

    python -m bench.hybrid_levers rows [--lever tome] [--dry-run]   # the run.py command of each row; --dry-run composes and checks them
    python -m bench.hybrid_levers train --lever tome [--seeds 1 2 3] --log-dir DIR   # runs the rows (one at a time), then `table`
    python -m bench.hybrid_levers table --lever tome --log-dir DIR   # test accuracy per row: seeds, mean ± sd
    python -m bench.hybrid_levers tome-curve --log-dir DIR [--png docs/hybrid_tome.png] [--speed-json F]   # speed-up and accuracy across merge ratios
    python -m bench.hybrid_levers gate --log-dir DIR [--ckpt [row=]C] # gate statistics with one stream's input corrupted

Every row names all the settings it depends on (net shape, optimizer, schedule, budget, data),
so a later change of an experiment's defaults does not move these numbers. Runs land under
<log dir>/lever_<row>/runs/; `table`, `tome-curve` and `gate` read the completed ones there.
Timings interleave the variants in one process (bench.hybrid.side_by_side): per-round ratios to
the baseline, median over rounds. Prints markdown rows.
"""

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The CPU-sized hybrid (hybrid_tiny as of this bench), spelled out.
NET = ["model.net.fusion_dim=128", "model.net.gate_reduction=4", "model.net.head=linear", "model.net.projection_dim=0",
       "model.net.cnn.name=convnextv2_atto", "model.net.cnn.drop_path_rate=0.0", "model.net.cnn.kwargs.patch_size=1",
       "model.net.cnn.kwargs.depths=[1,1,1,1]", "model.net.cnn.kwargs.dims=[16,32,64,128]",
       "model.net.vit.name=vit_tiny_patch16_224", "model.net.vit.drop_path_rate=0.1", "model.net.vit.kwargs.img_size=28",
       "model.net.vit.kwargs.embed_dim=64", "model.net.vit.kwargs.depth=4", "model.net.vit.kwargs.num_heads=2",
       "model.net.vit.kwargs.mlp_ratio=2.0", "model.net.cbam=false", "model.net.token_learner.tokens=0",
       "model.net.tome.r=0", "model.net.lora.rank=0"]
# mnist5k (3600 train / 400 val / 1000 test digits), AdamW + warm-up cosine, label-smoothed CE.
TRAIN = ["experiment=hybrid_ce", "data.batch_size=128", "data.augment.crop_padding=2", "model.loss.name=ce",
         "model.label_smoothing=0.1", "model.optimizer.weight_decay=0.05", "model.scheduler.warmup_epochs=1",
         "model.scheduler.min_lr_ratio=0.01", "model.optimization.sam.enabled=false",
         "model.optimization.lookahead.enabled=false", "model.optimization.grad_centralization=false",
         "callbacks.progress_bar=null"]


def budget(epochs: int, lr: float) -> list[str]:
    return [f"trainer.max_epochs={epochs}", f"model.optimizer.lr={lr}"]


# lever -> row -> overrides (beyond TRAIN + NET). The first row of a lever is its baseline.
ROWS = {
    # 196 tokens (patch 2 on 28x28): the token count at which merging can pay; ViT stream alone
    "tome": {"vit_p2": ["model.net.mode=vit", "model.net.vit.kwargs.patch_size=2", *budget(6, 5e-3)]},
    # hybrid_ce's budget (5 epochs, 145 steps, lr 2e-3), gate against plain concatenation
    "gate": {"concat": ["model.net.mode=concat", "model.net.vit.kwargs.patch_size=4", *budget(5, 2e-3)],
             "gated": ["model.net.mode=gated", "model.net.vit.kwargs.patch_size=4", *budget(5, 2e-3)]},
    # symmetric label noise (40 % flipped), CNN stream alone (the cheapest net that learns), 10 epochs;
    # rho searched on seed 1 over 0.002 / 0.005 / 0.02 (SAM) and 0.1 / 0.5 (ASAM)
    "sam": {f"{name}_noise{noise}": ["model.net.mode=cnn", f"+data.label_noise={noise}", *budget(10, 2e-3), *extra]
            for noise in (0.4, 0.0)
            for name, extra in (("adamw", []),
                                *((f"sam{rho}", ["model.optimization.sam.enabled=true", f"model.optimization.sam.rho={rho}",
                                                 "model.optimization.sam.adaptive=false"]) for rho in (0.002, 0.005, 0.02)),
                                *((f"asam{rho}", ["model.optimization.sam.enabled=true", f"model.optimization.sam.rho={rho}",
                                                  "model.optimization.sam.adaptive=true"]) for rho in (0.1, 0.5)))},
}


def row_overrides(lever: str, row: str, seed: int, log_dir: str | None) -> list[str]:
    where = [f"paths.log_dir={log_dir}"] if log_dir else []
    return [*TRAIN, *NET, *ROWS[lever][row], f"seed={seed}", f"task_name=lever_{lever}_{row}", *where]


def selected(lever: str | None) -> list[str]:
    if lever and lever not in ROWS:
        raise SystemExit(f"error: --lever {lever!r} is not one of {sorted(ROWS)}")
    return [lever] if lever else list(ROWS)


def rows(args) -> None:
    from hylab.preflight import check_command

    for lever in selected(args.lever):
        for row in ROWS[lever]:
            overrides = row_overrides(lever, row, args.seeds[0], args.log_dir)
            if args.dry_run:
                check_command(overrides, ROOT / "conf")
            print(f"# {lever} / {row}\nuv run python run.py {shlex.join(overrides)}")


def train(args) -> None:
    for lever in selected(args.lever):
        for row in ROWS[lever]:
            if args.row and row not in args.row:
                continue
            for seed in args.seeds:
                if seed in completed(args.log_dir, lever, row):
                    continue
                command = [sys.executable, str(ROOT / "run.py"), *row_overrides(lever, row, seed, args.log_dir)]
                print("$", shlex.join(command[1:]), flush=True)
                subprocess.run(command, cwd=ROOT, check=False, stdout=subprocess.DEVNULL)
    table(args)


def completed(log_dir: str, lever: str, row: str) -> dict[int, dict]:
    """seed -> metrics.json of the newest completed run of a row."""
    found = {}
    for path in sorted(Path(log_dir, f"lever_{lever}_{row}", "runs").glob("*/metrics.json")):
        record = json.loads(path.read_text())
        if record.get("status") == "completed":
            found[int(record["seed"])] = record
    return found


def mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(args) -> None:
    print("| lever | row | seeds | test acc per seed | mean ± sd | run s (mean) |\n|---|---|---|---|---|---|")
    for lever in selected(args.lever):
        for row in ROWS[lever]:
            runs = completed(args.log_dir, lever, row)
            accs = [runs[s]["metrics"]["test/acc"] for s in sorted(runs)]
            walls = [runs[s].get("wall_time_s", 0.0) for s in sorted(runs)]
            print(f"| {lever} | {row} | {','.join(map(str, sorted(runs)))} | {' / '.join(f'{a:.4f}' for a in accs)} | "
                  f"{mean_sd(accs)} | {statistics.mean(walls) if walls else 0:.0f} |")


def checkpoints(log_dir: str, lever: str, row: str) -> list[tuple[int, str]]:
    runs = completed(log_dir, lever, row)
    return [(seed, (runs[seed].get("checkpoints") or {}).get("best") or str(Path(runs[seed]["run_dir"]) / "checkpoints" / "last.ckpt"))
            for seed in sorted(runs)]


def given_checkpoints(values: list[str]) -> dict[str, list[tuple[int, str]]]:
    """`--ckpt [row=]path` values (row defaults to gated) as {row: [(0, path)]}."""
    found: dict[str, list[tuple[int, str]]] = {}
    for value in values:
        row, _, path = value.partition("=") if "=" in value else ("gated", "", value)
        found.setdefault(row, []).append((0, path))
    return found


def main() -> None:
    from bench import hybrid_levers_eval as ev

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["rows", "train", "table", "tome-curve", "gate"])
    parser.add_argument("--lever")
    parser.add_argument("--row", action="append")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--log-dir", default=str(ROOT / "logs"))
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--png")
    parser.add_argument("--ckpt", action="append", help="gate: [row=]checkpoint (row: gated or concat) instead of the completed rows")
    parser.add_argument("--speed-json", help="tome-curve: where the timings are kept; read back when it exists")
    parser.add_argument("--merge", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.6, 0.8],
                        help="share of the patch tokens merged away by the last block (r = share * N / depth)")
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 192])
    parser.add_argument("--patches", type=int, nargs="+", default=[4, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    {"rows": rows, "train": train, "table": table,
     "tome-curve": lambda a: ev.tome_report(a, checkpoints(a.log_dir, "tome", "vit_p2")),
     "gate": lambda a: ev.gate_report(a, given_checkpoints(a.ckpt) if a.ckpt else
                                      {row: checkpoints(a.log_dir, "gate", row) for row in ROWS["gate"]})}[args.what](args)


if __name__ == "__main__":
    main()
