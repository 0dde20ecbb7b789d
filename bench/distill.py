"""Does distillation help a small ViT? DeiT students side by side, same data, epochs and seeds.

    uv run python -m bench.distill                       # the table in docs/RESULTS.md (DeiT section)
    uv run python -m bench.distill --subset 200 --epochs 1 --teacher-epochs 1 --seeds 0   # a plumbing check

Every row is one `python run.py experiment=... <overrides>` (printed with its result), so each
number can be reproduced alone. The teacher is the SE-ResNet experiment on the same data subset,
taken from (or trained once into) the run store under --log-dir; its row is its own test accuracy.
Accuracy is on the full official test split; runs train on a random (fixed) subset of the training
split (CPU budget). Results are also written to <log-dir>/distill_results.json.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from datamodules.image.sources import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parent.parent

# The SE-ResNet teacher, shrunk for a CPU budget: one SE block per stage, 16 -> 32 -> 64 channels
# (about 10x fewer multiply-adds than seresnet_mnist, whose forward pass would otherwise cost
# more than the student's training step). --teacher-net full keeps seresnet_mnist.
SMALL_TEACHER = ["model.net._target_=lightning_modules.image.nets.seresnet.SEResNet", "++model.net.blocks_per_stage=[1,1,1]",
                 "++model.net.channels=[16,32,64]", "model.net.se_reduction=4"]
TEACHER_DIMS = {"small": "[32,64]", "full": "[64,128]"}  # channels of SE-ResNet stages 1 and 2

# row name -> (experiment, extra overrides)
ROWS = {
    "scratch": ("deit_scratch", []),
    "hard": ("deit_distill", ["model.distillation.mode=hard"]),
    "soft": ("deit_distill", ["model.distillation.mode=soft"]),
    "token": ("deit_token_distill", []),
    "scratch+ema": ("deit_scratch", ["callbacks=ema"]),
    "hard+ema": ("deit_distill", ["model.distillation.mode=hard", "callbacks=ema"]),
    "scratch+swa": ("deit_scratch", ["callbacks=swa"]),
    "hard+swa": ("deit_distill", ["model.distillation.mode=hard", "callbacks=swa"]),
    "soft+ema": ("deit_distill", ["model.distillation.mode=soft", "callbacks=ema"]),
    "soft+swa": ("deit_distill", ["model.distillation.mode=soft", "callbacks=swa"]),
}


def data_overrides(args) -> tuple[str, list[str]]:
    """(teacher experiment, overrides shared by the teacher and every student)."""
    if args.data == "fashion_mnist":
        teacher, student_data = "seresnet_fmnist", "deit_fmnist"
    else:
        teacher, student_data = "seresnet_mnist5k", "deit_mnist5k"
    shared = [f"++data.train_subset={args.subset}", f"data.val_fraction={args.val_fraction}", "data.eval_batch_size=1000"]
    return teacher, [f"data={student_data}", *shared]


def quiet() -> list[str]:
    return ["callbacks.progress_bar=null", "++trainer.enable_model_summary=false"]


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")
    return time.perf_counter() - started


def ensure_teacher(args, teacher: str, shared: list[str], out: Path) -> tuple[list[str], dict]:
    """The teacher's overrides, and its store entry (trained now if absent)."""
    net = SMALL_TEACHER if args.teacher_net == "small" else []
    overrides = [*shared[1:], *net, f"trainer.max_epochs={args.teacher_epochs}", "seed=0", *quiet()]
    command = [sys.executable, "-m", "hylab.store_cli", "--log-dir", str(args.log_dir), "get", teacher, *overrides]
    print(f"teacher: {' '.join(command[1:])}", flush=True)
    wall = run(command, out / "teacher.log")
    entry = json.loads((out / "teacher.log").read_text().strip().splitlines()[-1])
    record = json.loads((Path(entry["run_dir"]) / "metrics.json").read_text())
    print(f"  test/acc {record['metrics']['test/acc']:.4f}  ({wall:.0f} s, run {record['run_id']})", flush=True)
    return overrides, {"test_acc": record["metrics"]["test/acc"], "run_dir": entry["run_dir"], "wall_s": wall}


def student_command(args, row: str, seed: int, shared: list[str], teacher: str, teacher_overrides: list[str], run_dir: Path) -> list[str]:
    experiment, extra = ROWS[row]
    command = [
        sys.executable, "run.py", f"experiment={experiment}", *shared, *extra,
        f"trainer.max_epochs={args.epochs}", f"seed={seed}", f"paths.log_dir={args.log_dir}",
        f"hydra.run.dir={run_dir}", "store.register_runs=false", *quiet(), *args.student_overrides,
    ]
    if experiment != "deit_scratch":
        command += [f"callbacks.distillation_teacher.experiment={teacher}",
                    "callbacks.distillation_teacher.overrides=" + json.dumps(teacher_overrides).replace(" ", "")]
    if experiment == "deit_token_distill":
        command.append(f"model.token_distillation.teacher_dims={TEACHER_DIMS[args.teacher_net]}")
    if "callbacks=ema" in extra:
        command.append(f"callbacks.ema.decay={args.ema_decay}")
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["fashion_mnist", "mnist5k"], default="fashion_mnist" if DEBIAN_FASHION_MNIST.is_dir() else "mnist5k")
    parser.add_argument("--subset", type=int, default=1000, help="training images: a random subset fixed by data.split_seed")
    parser.add_argument("--val-fraction", type=float, default=0.02, help="of the training split, held out for validation")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--teacher-net", choices=["small", "full"], default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--rows", nargs="+", default=["scratch", "hard", "soft", "token", "hard+ema", "hard+swa"], choices=list(ROWS))
    parser.add_argument("--ema-decay", type=float, default=0.95,
                        help="0.999 averages over ~1000 steps; these runs take ~240 (1000 images / 64 x 15 epochs)")
    parser.add_argument("--student-overrides", nargs="*", default=[],
                        help="appended to every student's command, e.g. data.mixing.mixup_alpha=0.8 data.mixing.cutmix_alpha=1.0")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "bench" / "out" / "deit")
    args = parser.parse_args()
    args.log_dir = args.log_dir.resolve()
    out = args.log_dir / "bench_logs"
    out.mkdir(parents=True, exist_ok=True)

    teacher, shared = data_overrides(args)
    teacher_overrides, teacher_result = ensure_teacher(args, teacher, shared, out)
    results_file = args.log_dir / "distill_results.json"
    # rows of an earlier call with the same log dir (same teacher) are kept; the rows run now replace theirs
    earlier = json.loads(results_file.read_text())["rows"] if results_file.is_file() else {}
    rows = {name: runs for name, runs in earlier.items() if name not in args.rows}
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "teacher": teacher_result, "rows": rows}
    for row in args.rows:
        for seed in args.seeds:
            run_dir = args.log_dir / "bench_runs" / f"{row}_seed{seed}"
            command = student_command(args, row, seed, shared, teacher, teacher_overrides, run_dir)
            wall = run(command, out / f"{row}_seed{seed}.log")
            metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
            result = {"seed": seed, "test_acc": metrics["test/acc"], "val_acc_best": metrics.get("val/acc_best"), "wall_s": round(wall, 1),
                      "command": " ".join(["python", *command[1:]])}
            results["rows"].setdefault(row, []).append(result)
            print(f"{row:12s} seed {seed}  test/acc {result['test_acc']:.4f}  ({wall:.0f} s)  {result['command']}", flush=True)
            results_file.write_text(json.dumps(results, indent=2))
    print_table(results)


def print_table(results: dict) -> None:
    rows = results["rows"]
    scratch = {r["seed"]: r["test_acc"] for r in rows.get("scratch", [])}
    print(f"\n| student | test acc per seed | mean | vs scratch (same seed) |\n|---|---|---|---|")
    print(f"| teacher (SE-ResNet) | {results['teacher']['test_acc']:.4f} | | |")
    for name, runs in rows.items():
        accs = [r["test_acc"] for r in runs]
        deltas = [r["test_acc"] - scratch[r["seed"]] for r in runs if r["seed"] in scratch and name != "scratch"]
        delta = " ".join(f"{d:+.4f}" for d in deltas) if deltas else ""
        print(f"| {name} | {' '.join(f'{a:.4f}' for a in accs)} | {statistics.mean(accs):.4f} | {delta} |")


if __name__ == "__main__":
    main()
