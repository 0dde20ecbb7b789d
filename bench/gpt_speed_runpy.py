"""Does the run path cost anything? hylab's training through `run.py experiment=gpt_tiny` (the
real CLI: Lightning's loop, callbacks, logging) against a plain loop over the same net, optimizer,
schedule, clipping and batches, in one thread. Order: plain, run.py, plain; tokens/s over the
last `window` steps of each (the ThroughputMonitor's window in run.py), ratio run.py / plain."""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def plain_loop(cfg, datamodule, steps: int, window: int) -> float:
    import torch
    from hydra.utils import instantiate

    from lightning_modules.gpt.optim import build_gpt_optimizer

    torch.manual_seed(cfg.seed if "seed" in cfg else 0)
    net = instantiate(cfg.model.net).train()
    optimizer = build_gpt_optimizer(net, instantiate(cfg.model.matrix_optimizer), instantiate(cfg.model.embedding_optimizer), cfg.model.head_lr)
    (schedule,) = instantiate(cfg.model.scheduler)(optimizer, total_steps=steps, steps_per_epoch=steps)
    scheduler = schedule["scheduler"]
    loader, done, ends = datamodule.train_dataloader(), 0, []
    while done < steps:
        for inputs, targets in loader:
            net.loss(inputs, targets).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.trainer.gradient_clip_val)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            done += 1
            ends.append(time.perf_counter())
            if done == steps:
                break
    return window * cfg.data.batch_size * cfg.data.sequence_len / (ends[-1] - ends[-1 - window])


def through_run_py(overrides: list[str], out: Path, steps: int, window: int) -> float:
    root = Path(__file__).resolve().parent.parent
    log_dir = out / f"run_py_{time.time_ns()}"
    command = [sys.executable, str(root / "run.py"), "experiment=gpt_tiny", *overrides, "trainer.accelerator=cpu",
               f"trainer.max_steps={steps}", "trainer.val_check_interval=1000000", "trainer.log_every_n_steps=1",
               f"callbacks.throughput.window_size={window}", "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null",
               "+trainer.enable_checkpointing=false", "callbacks.progress_bar=null", f"paths.log_dir={log_dir}"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise SystemExit(f"run.py failed:\n{done.stderr[-3000:]}")
    (record,) = [json.loads(p.read_text()) for p in log_dir.rglob("metrics.json")]
    with open(Path(record["run_dir"]) / "csv" / "metrics.csv") as handle:
        values = [float(row["train/device/items_per_sec"]) for row in csv.DictReader(handle) if row.get("train/device/items_per_sec")]
    return values[-1]


def run_py_against_plain_loop(cfg, datamodule, overrides: list[str], out: Path, steps: int) -> dict:
    window = max(2, steps * 2 // 3)
    plain_before = plain_loop(cfg, datamodule, steps, window)
    run_py = through_run_py(overrides, out, steps, window)
    plain_after = plain_loop(cfg, datamodule, steps, window)
    ratio = run_py / ((plain_before + plain_after) / 2)
    table = (f"run.py against a plain loop (same net, optimizer, schedule, clipping; {steps} steps, tokens/s over the last "
             f"{window}): plain {plain_before:,.0f}, run.py {run_py:,.0f}, plain {plain_after:,.0f} -> run.py / plain {ratio:.2f} "
             f"(load {os.getloadavg()[0]:.1f})")
    return {"plain": [plain_before, plain_after], "run_py": run_py, "ratio": ratio, "steps": steps, "window": window, "table": table}
