"""task=eval: the CORE-proxy benchmarks (core_eval.py, generative_eval.py) on a GPT checkpoint.

    python run.py experiment=gpt_tiny task=eval ckpt_path=<run>/checkpoints/last.ckpt
    python run.py experiment=gpt_tiny task=eval ckpt_path=... evaluation.max_items=100 evaluation.tasks.humaneval=null

Each task's result is written to <results dir>/<task>.json as soon as it is done, and a task whose
file is there (same checkpoint, same settings) is not run again, so an interrupted evaluation
resumes. The table goes to core_table.md in the run dir and the numbers to metrics.json and the
run's loggers.
"""

import json
import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig

from datamodules.gpt.benchmarks import load_benchmark
from hylab.errors import UserError
from hylab.records import atomic_write_text
from hylab.settings import parse_settings
from hylab.tasks import TaskResult
from lightning_modules.gpt.core_eval import centred, evaluate_items
from lightning_modules.gpt.generative_eval import evaluate_gsm8k, evaluate_humaneval
from lightning_modules.gpt.settings import EvaluationSettings

log = logging.getLogger("hylab")
LIKELIHOOD = ("choice", "lm")


def evaluation_settings(cfg: DictConfig) -> EvaluationSettings:
    if cfg.get("evaluation") is None:
        raise UserError("task=eval reads its settings from `evaluation`: add `- /evaluation: gpt_core` to the experiment's defaults")
    return parse_settings(EvaluationSettings, cfg.evaluation, "evaluation")


def subsample(items: list, max_items: int | None, seed: int) -> list:
    """At most max_items items, a seeded random subset in a fixed order (all when None)."""
    if not max_items or len(items) <= max_items:
        return items
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[:max_items])]


class Progress:
    """A rich progress bar over every item of every task (silent when stdout is not a terminal)."""

    def __init__(self, enabled: bool):
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(disable=not enabled, transient=True)
        self.task = None

    def start(self, name: str, total: int):
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=total)
        return lambda: self.bar.advance(self.task)


def run_benchmarks(net, tokenizer, settings: EvaluationSettings, results_dir: Path, show_progress: bool = True) -> list[dict]:
    """Every task of `settings.tasks` (a null entry is skipped); one dict per task."""
    results_dir.mkdir(parents=True, exist_ok=True)
    context_len = net.config.context_len
    rows, progress = [], Progress(show_progress)
    with progress.bar:
        for name, task in settings.tasks.items():
            if task is None:
                continue
            done_file = results_dir / f"{name}.json"
            if done_file.is_file():
                rows.append(json.loads(done_file.read_text()))
                log.info(f"eval {name}: reused {done_file}")
                continue
            benchmark, items, pool = load_benchmark(name, settings.wheel_dir)
            items = subsample(items, task.max_items if task.max_items is not None else settings.max_items, settings.seed)
            tick = progress.start(name, len(items))
            started, samples = time.perf_counter(), []
            if benchmark.kind in LIKELIHOOD:
                accuracy = evaluate_items(net, items, pool, benchmark.kind, task.shots, tokenizer.encode, tokenizer.bos_id,
                                          context_len, settings.seed, settings.use_cache, tick)
            elif benchmark.kind == "gsm8k":
                accuracy = evaluate_gsm8k(net, tokenizer, items, task.max_new_tokens, tick, samples)
            else:
                accuracy = evaluate_humaneval(net, tokenizer, items, task.max_new_tokens, task.timeout_s, tick, samples)
            row = {
                "task": name, "kind": benchmark.kind, "items": len(items), "shots": task.shots if benchmark.kind in LIKELIHOOD else None,
                "accuracy": accuracy, "random_baseline": benchmark.random_baseline,
                "centred": centred(accuracy, benchmark.random_baseline), "seconds": time.perf_counter() - started, "samples": samples,
            }
            atomic_write_text(done_file, json.dumps(row, indent=2) + "\n")
            log.info(f"eval {name}: accuracy {100 * accuracy:.1f}% (random {benchmark.random_baseline:.1f}%), centred {row['centred']:+.3f}, "
                     f"{len(items)} items in {row['seconds']:.0f} s")
            rows.append(row)
    return rows


def core_metrics(rows: list[dict]) -> dict[str, float]:
    """eval/<task>/acc and /centred, eval/core (the mean centred accuracy of the likelihood tasks)."""
    metrics = {}
    for row in rows:
        metrics[f"eval/{row['task']}/acc"] = row["accuracy"]
        metrics[f"eval/{row['task']}/centred"] = row["centred"]
    core = [row["centred"] for row in rows if row["kind"] in LIKELIHOOD]
    if core:
        metrics["eval/core"] = sum(core) / len(core)
    return metrics


def core_table(rows: list[dict]) -> str:
    """The results as a markdown table, each task beside its random baseline."""
    lines = ["| task | items | shots | accuracy % | random % | centred |", "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        shots = "" if row["shots"] is None else row["shots"]
        lines.append(f"| {row['task']} | {row['items']} | {shots} | {100 * row['accuracy']:.1f} | {row['random_baseline']:.1f} | {row['centred']:+.3f} |")
    core = core_metrics(rows).get("eval/core")
    if core is not None:
        count = sum(row["kind"] in LIKELIHOOD for row in rows)
        lines.append(f"| **CORE-proxy** (mean centred, {count} likelihood tasks) | | | | 0 | **{core:+.4f}** |")
    return "\n".join(lines) + "\n"


def log_to_loggers(cfg: DictConfig, metrics: dict[str, float]) -> None:
    from hylab.instantiate import build

    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        logger = build(node)
        logger.log_metrics(metrics, step=0)
        logger.finalize("success")


def evaluate(cfg: DictConfig) -> TaskResult:
    from lightning_modules.gpt.tasks import load_for_sampling

    settings = evaluation_settings(cfg)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    net, tokenizer = load_for_sampling(cfg)
    output_dir = Path(cfg.paths.output_dir)
    rows = run_benchmarks(net, tokenizer, settings, output_dir / "eval", show_progress=bool(cfg.trainer.get("enable_progress_bar", True)))
    metrics = core_metrics(rows)
    table = core_table(rows)
    atomic_write_text(output_dir / "core_table.md", table)
    print(table, flush=True)
    log_to_loggers(cfg, metrics)
    return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)},
                      extra={"eval_table": str(output_dir / "core_table.md"), "eval_settings": asdict(settings)})


