"""Personalization per participant: the three fine-tune modes side by side, one short run each.

    uv run python -m bench.har                                  # participants 0 1 2, 5 epochs
    uv run python -m bench.har --participants 3 --epochs 1 --base-epochs 1   # a plumbing check

Every row is one `python run.py experiment=har_finetune finetune.mode=<mode> data.target_subject=<p>`
(printed with its result), so each number can be reproduced alone. The base model of a
participant (har_base, all other participants) comes from the run store under --log-dir: the
first job that needs it trains it, the next mode reuses it; its training time lands in that row's
wall time. Prints a markdown table of test macro-F1 and accuracy on the target's test block.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODES = ["target_only", "full_fine_tuning", "target_only_fine_tuning"]


def command(args, participant: int, mode: str, run_dir: Path) -> list[str]:
    return [
        sys.executable, str(ROOT / "run.py"), "experiment=har_finetune", f"finetune.mode={mode}",
        f"data.target_subject={participant}", f"trainer.max_epochs={args.epochs}", f"seed={args.seed}",
        f"finetune.base.extra_overrides=['trainer.max_epochs={args.base_epochs}']",
        f"paths.log_dir={args.log_dir}", f"hydra.run.dir={run_dir}", "store.reuse=false",
        "callbacks.progress_bar=null", "++trainer.enable_model_summary=false",
    ]


def run_row(args, participant: int, mode: str) -> dict:
    run_dir = Path(args.log_dir) / "bench_har" / f"p{participant}_{mode}"
    argv = command(args, participant, mode, run_dir)
    print(" ".join(argv[1:]), flush=True)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv[1:])}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {"participant": participant, "mode": mode, "f1": metrics["test/f1_macro"], "acc": metrics["test/acc"], "wall_s": wall}


def table(rows: list[dict]) -> str:
    lines = ["| participant | mode | test macro-F1 | test acc | wall s |", "|---|---|---|---|---|"]
    lines += [f"| {r['participant']} | {r['mode']} | {r['f1']:.3f} | {r['acc']:.3f} | {r['wall_s']:.0f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=MODES)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of each fine-tune / target-only run")
    parser.add_argument("--base-epochs", type=int, default=5, help="epochs of each participant's base model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=str(ROOT / "logs" / "bench_har"))
    args = parser.parse_args()
    rows = [run_row(args, participant, mode) for participant in args.participants for mode in args.modes]
    print(table(rows))


if __name__ == "__main__":
    main()
