"""A real search with and without pruning: best value reached and epochs trained.

    uv run python -m bench.pruning                         # 20 trials, seeds 0 1 2, none vs hyperband
    uv run python -m bench.pruning --trials 4 --seeds 0 --max-epochs 3   # a plumbing check

Each search is one `python run.py -m hparams_search=seresnet_optuna ...` (printed before it runs,
so any row can be reproduced alone) over an MLP on scikit-learn's digits (the cheapest real
search here: lr, weight decay and label smoothing, TPE, `--max-epochs` per trial), once with
`hydra.sweeper.pruner=none` and once with `--pruner`, for each sampler seed. The searches of a
seed alternate, so a bench cut short still has its pairs. Re-running resumes: a finished search
is read back, not trained again. Best value: the study's best `val/acc_best` (validation split);
epochs: the sum over trials of the epochs each trained (metrics.json `progress`); trials' wall s:
the sum of their runs' wall times (a resumed search's command is short, its trials' sum is not). Trials run
with `--threads` torch threads (default 1: the machine is shared).

The sweeper reseeds a stored study's sampler in every process (workers share it), so a seed names
an independent repetition, not a reproducible sequence of trials.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
SEARCH = [
    "hparams_search=seresnet_optuna", "model/net=mlp", "model.optimizer.lr=tag(log, interval(0.0001, 0.1))",
    "callbacks.progress_bar=null", "callbacks.lr_monitor=null", "logger=none", "test_after_fit=false",
    "store.reuse=false", "store.register_runs=false", "++trainer.enable_model_summary=false",
]
# the searched experiment's task name, which names the sweep folder
TASK_NAME = "seresnet_digits"


def command(args, pruner: str, seed: int) -> list[str]:
    return [
        sys.executable, str(ROOT / "run.py"), *SEARCH, f"trainer.max_epochs={args.max_epochs}", f"seed={seed}",
        f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweeper.n_trials={args.trials}", f"hydra.sweeper.pruner={pruner}",
        f"hydra.sweeper.study_name=bench_{pruner}_{seed}", f"paths.log_dir={args.log_dir}",
    ]


def sweep_dir(args, pruner: str, seed: int) -> Path:
    return Path(args.log_dir) / TASK_NAME / "optuna" / f"bench_{pruner}_{seed}"


def run_search(args, pruner: str, seed: int) -> dict:
    argv = command(args, pruner, seed)
    print(" ".join(argv[1:]), flush=True)
    started = time.perf_counter()
    threads = str(args.threads)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(argv[1:])}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    folder = sweep_dir(args, pruner, seed)
    study = optuna.load_study(study_name=f"bench_{pruner}_{seed}", storage=f"sqlite:///{folder}/study.db")
    trials = study.get_trials(deepcopy=False)
    records = [json.loads(path.read_text()) for path in folder.glob("trial_*/metrics.json")]
    epochs = sum(int((r.get("progress") or {}).get("epochs_completed") or 0) for r in records)
    return {
        "pruner": pruner, "seed": seed, "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials), "best": study.best_value, "epochs": epochs, "wall_s": wall,
        "trial_s": sum(float(r.get("wall_time_s") or 0) for r in records),
    }


def table(rows: list[dict]) -> str:
    lines = ["| pruner | seed | complete | pruned | best val/acc | epochs trained | trials' wall s | this command's wall s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['pruner']} | {r['seed']} | {r['complete']} | {r['pruned']} | {r['best']:.4f} | {r['epochs']} | {r['trial_s']:.0f} | {r['wall_s']:.0f} |" for r in rows]
    return "\n".join(lines)


def verdict(rows: list[dict], pruner: str) -> str:
    """Whether every pruned search reached the unpruned searches' seed spread at half their epochs."""
    plain = [r for r in rows if r["pruner"] == "none"]
    pruned = [r for r in rows if r["pruner"] == pruner]
    if not plain or not pruned:
        return "no pair of searches to compare"
    low = min(r["best"] for r in plain)
    plain_epochs, pruned_epochs = statistics.fmean(r["epochs"] for r in plain), statistics.fmean(r["epochs"] for r in pruned)
    within = all(r["best"] >= low for r in pruned)
    ratio = pruned_epochs / plain_epochs
    reached = within and ratio <= 0.5
    return (f"unpruned best {statistics.fmean(r['best'] for r in plain):.4f} (seed spread {low:.4f}..{max(r['best'] for r in plain):.4f}), "
            f"{pruner} best {statistics.fmean(r['best'] for r in pruned):.4f} ({'all' if within else 'not all'} within the spread); "
            f"epochs {pruned_epochs:.0f} vs {plain_epochs:.0f} (ratio {ratio:.2f}); goal {'reached' if reached else 'NOT reached'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--pruner", default="hyperband", choices=["median", "successive_halving", "hyperband"])
    # torch's intra-op threads spin-wait: on a shared, loaded CPU two of them made a step of this
    # MLP 77x slower than one (740 vs 9.6 ms at load 17 on 2 cores)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial (OMP_NUM_THREADS)")
    parser.add_argument("--log-dir", default=str(ROOT / "logs" / "bench_pruning"))
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        for pruner in ("none", args.pruner):
            rows.append(run_search(args, pruner, seed))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(verdict(rows, args.pruner))


if __name__ == "__main__":
    main()
