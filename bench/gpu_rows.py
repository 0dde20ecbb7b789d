"""The rows of bench.gpu: what each runs (run.py configs and bench modules, as subprocesses), how
long it may take, and how its result is read back from the files the run wrote."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpt import last_logged
from datamodules.image.sources import DEBIAN_FASHION_MNIST

ROOT = Path(__file__).resolve().parent.parent
CARRIED_DATA = ROOT / ".data"  # git-ignored; scripts/gpu_prepare.sh fills it for machines without a network
PYTHON = sys.executable


@dataclass
class RunPy:
    """`python run.py experiment=<experiment> <overrides>`, its runs under `log_dir`."""

    experiment: str
    overrides: list[str]
    log_dir: Path

    def argv(self) -> list[str]:
        return [PYTHON, str(ROOT / "run.py"), f"experiment={self.experiment}", *self.overrides, f"paths.log_dir={self.log_dir}"]


Command = RunPy | list[str]


@dataclass
class Row:
    name: str
    goal: str
    cap_s: float  # the row is killed (its whole process group) after this long
    commands: Callable[[Path], Iterator[Command]]  # given the row's folder; each runs after the one before succeeded
    read: Callable[[Path, list[float]], tuple[str, dict]]  # (row folder, seconds per command) -> (result, values)
    prepare: Callable[[], str | None] | None = None  # makes what it can ready; returns why the row cannot run
    min_s: float = 0.0  # not started with less of the budget left
    dry_check: Callable[[], str] | None = None  # a check the dry run makes beyond composing the configs
    needs: list[str] = field(default_factory=list)  # modules run with `python -m`
    configs: list[RunPy] = field(default_factory=list)  # run.py configs a bench module composes (dry run)


def records(log_dir: Path) -> list[dict]:
    """metrics.json of every run folder under log_dir."""
    return [json.loads(p.read_text()) for p in sorted(Path(log_dir).rglob("metrics.json"))]


def one_completed_run(log_dir: Path) -> dict:
    found = records(log_dir)
    if len(found) != 1:
        raise ValueError(f"{len(found)} run folders under {log_dir}, one expected")
    if found[0]["status"] != "completed":
        raise ValueError(f"run status {found[0]['status']}: {found[0].get('error', '')}")
    return found[0]


# --- every gpu-marked test -------------------------------------------------------------------

def gpu_test_files() -> list[str]:
    """The test files with a gpu-marked test: only these are collected, so the row needs no more
    than the run path imports (the rest of the suite imports optional packages too)."""
    return [str(p) for p in sorted((ROOT / "tests").rglob("test_*.py")) if "@pytest.mark.gpu" in p.read_text()]


def gpu_test_count() -> str:
    count = sum(Path(p).read_text().count("@pytest.mark.gpu") for p in gpu_test_files())
    if not count:
        raise ValueError("no test under tests/ is marked gpu")
    return f"{count} gpu-marked tests in {len(gpu_test_files())} files"


def read_pytest(folder: Path, seconds: list[float]) -> tuple[str, dict]:
    summary = (folder / "0.log").read_text().strip().splitlines()[-1]
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    if not counts.get("passed"):
        raise ValueError(f"no gpu test passed: {summary}")
    return summary.strip("= "), counts


# --- fmnist_speed hardware=gpu as typed -----------------------------------------------------------------

def fmnist_overrides() -> list[str]:
    """Read Fashion-MNIST from the copy scripts/gpu_prepare.sh carries in, when there is one."""
    return [f"data.data_dir={CARRIED_DATA}"] if (CARRIED_DATA / "FashionMNIST" / "raw").is_dir() else []


def fashion_mnist_ready() -> str | None:
    """Debian's dataset-fashion-mnist, installed here when missing and allowed; why not otherwise."""
    if fmnist_overrides() or DEBIAN_FASHION_MNIST.is_dir() or (ROOT / "data" / "FashionMNIST" / "raw").is_dir():
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"Fashion-MNIST is not in {DEBIAN_FASHION_MNIST} or data/FashionMNIST/raw, and this user cannot apt-get install dataset-fashion-mnist"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for step in (["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]):
        try:
            subprocess.run(step, capture_output=True, timeout=90, env=env)
        except subprocess.TimeoutExpired:
            break
        if DEBIAN_FASHION_MNIST.is_dir():
            return None
    return "apt-get install dataset-fashion-mnist failed (no package source reachable?); carry in .data from scripts/gpu_prepare.sh, or put the four idx files in data/FashionMNIST/raw"


def read_fmnist(folder: Path, seconds: list[float]) -> tuple[str, dict]:
    record = one_completed_run(folder / "runs")
    values = {"test_acc": record["metrics"]["test/acc"], "run_s": record["wall_time_s"], "command_s": seconds[0]}
    return (f"test acc {values['test_acc']:.4f}; whole command {values['command_s']:.1f} s "
            f"(inside run.py {values['run_s']:.1f} s: data, compile, fit, test)"), values


# --- gpt_small tokens/s and MFU -----------------------------------------------------------------

GPT_SHORT = [  # a throughput run: no accumulation, no validation or checkpoint after the sanity pass
    "trainer.max_steps=150", "trainer.accumulate_grad_batches=1", "trainer.val_check_interval=1000000",
    "trainer.log_every_n_steps=10", "callbacks.throughput.window_size=50", "data.tokenizer_train_bytes=5000000",
    "data.max_val_sequences=32", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
    "+trainer.enable_checkpointing=false", "callbacks.progress_bar=null",
]


def read_throughput(folder: Path, seconds: list[float]) -> tuple[str, dict]:
    run_dir = Path(one_completed_run(folder / "runs")["run_dir"])
    tokens, mfu = last_logged(run_dir, "train/device/items_per_sec"), last_logged(run_dir, "train/device/mfu")
    if tokens is None:
        raise ValueError(f"no train/device/items_per_sec in {run_dir}/csv/metrics.csv")
    mfu_text = "MFU not logged (Lightning does not know this device's peak FLOP/s)" if mfu is None else f"MFU {mfu:.1%}"
    return f"{tokens:,.0f} tokens/s, {mfu_text}", {"tokens_per_s": tokens, "mfu": mfu, "command_s": seconds[0]}


# --- DeiT-Ti through run.py against a plain loop -----------------------------------------------

DEIT = ["trainer=gpu", "model/net=deit_tiny"]


def read_deit(folder: Path, seconds: list[float]) -> tuple[str, dict]:
    numbers = json.loads((folder / "overhead.json").read_text())
    rates = numbers["images_per_s"]
    relative = 1 / numbers["median_ratio"]["wall"]  # run.py's speed as a fraction of the plain loop's
    return (f"run.py {rates['hylab']:,.0f} images/s, plain timm + torch {rates['plain']:,.0f} images/s: "
            f"{relative:.3f}x (median of paired epochs)"), {**numbers, "relative_speed": relative}


# --- DDP and FSDP: one short fit, one run folder -------------------------------------------------

def read_one_folder(metric: str) -> Callable[[Path, list[float]], tuple[str, dict]]:
    def read(folder: Path, seconds: list[float]) -> tuple[str, dict]:
        record = one_completed_run(folder / "runs")
        value = record["metrics"].get(metric)
        return f"one run folder, completed, {metric} {value:.4f}", {metric: value, "run_dir": record["run_dir"], "command_s": seconds[0]}

    return read


# --- the RIS bench at full size ---------------------------------------------------------------

def best_checkpoint(log_dir: Path) -> str:
    """The best checkpoint of the one run under log_dir (a placeholder before it has run)."""
    found = records(log_dir)
    best = (found[0].get("checkpoints") or {}).get("best") if len(found) == 1 else None
    return best or str(Path(log_dir) / "not-trained-yet.ckpt")


def ris_commands(folder: Path) -> Iterator[Command]:
    yield RunPy("ris_hybrid", ["trainer.accelerator=gpu", "trainer.devices=1", "callbacks.progress_bar=null"], folder / "runs")
    yield [PYTHON, "-m", "bench.ris", "--hybrid", best_checkpoint(folder / "runs"), "--device", "cuda", "--scenes", "256", "--out", str(folder)]


def read_ris(folder: Path, seconds: list[float]) -> tuple[str, dict]:
    table = json.loads((folder / "ris_bench.json").read_text())
    return f"RMSE vs SNR at 256 scenes per SNR: {folder / 'ris_bench.json'} (training {seconds[0]:.0f} s, bench {seconds[1]:.0f} s)", table


def rows(devices: int) -> list[Row]:
    """Every row, in the order they run; `devices` is the number of visible CUDA devices."""
    many = [f"trainer.devices={devices}", "callbacks.progress_bar=null"]
    return [
        Row("gpu tests", "every gpu-marked test passes", 120,
            lambda f: iter([[PYTHON, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *gpu_test_files()]]),
            read_pytest, dry_check=gpu_test_count, needs=["pytest"]),
        Row("fmnist_speed hardware=gpu", "test acc >= 0.93 in < 10 s of training (one H100)", 100,
            lambda f: iter([RunPy("fmnist_speed", ["hardware=gpu", *fmnist_overrides()], f / "runs")]), read_fmnist, prepare=fashion_mnist_ready),
        Row("gpt_small bf16 + compile", "MFU >= 40 % (nanochat: 47-48 % on H100)", 150,
            lambda f: iter([RunPy("gpt_small", [*GPT_SHORT, "model.compile=true"], f / "runs")]), read_throughput),
        Row("gpt_small bf16 eager", "beside the compiled row", 90,
            lambda f: iter([RunPy("gpt_small", [*GPT_SHORT, "model.compile=false"], f / "runs")]), read_throughput),
        Row("DeiT-Ti run.py vs plain loop", ">= 0.95x the plain loop's images/s", 120,
            lambda f: iter([[PYTHON, "-m", "bench.overhead", "--experiment", "deit_scratch", "--epochs", "4", "--repeats", "3",
                             "--json", str(f / "overhead.json"), *DEIT]]),
            read_deit, needs=["bench.overhead"],
            configs=[RunPy("deit_scratch", [*DEIT, "trainer.max_epochs=4", "test_after_fit=false", "store.register_runs=false"], ROOT)]),
        Row(f"trainer=ddp, {devices} device(s), bf16-mixed", "one run folder", 90,
            lambda f: iter([RunPy("seresnet_digits", ["trainer=ddp", *many, "trainer.max_epochs=2"], f / "runs")]),
            read_one_folder("val/acc")),
        Row(f"trainer=gpt_fsdp (GPT), {devices} device(s), bf16-mixed", "one run folder", 120,
            lambda f: iter([RunPy("gpt_tiny", ["trainer=gpt_fsdp", *many, "model/matrix_optimizer=gpt_adamw",
                                               "trainer.max_steps=20", "trainer.val_check_interval=10"], f / "runs")]),
            read_one_folder("val/bpb")),
        Row("RIS bench, 256 scenes per SNR", "runs if time is left", 600, ris_commands, read_ris, min_s=150, needs=["bench.ris"]),
    ]
