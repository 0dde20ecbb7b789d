"""Framework overhead: the same net, data path, optimizer, schedule and precision trained
through hylab's run path (the function run.py calls, with the default callbacks, checkpoints and
CSV logger) and through a plain PyTorch loop, alternating in one process. Prints per-epoch times
and their ratio.

    uv run python -m bench.overhead                                  # the fmnist_speed recipe
    uv run python -m bench.overhead --experiment seresnet_mnist5k --epochs 4 --repeats 3

Per-epoch time = one training epoch plus its validation pass when the recipe validates after
it (trainer.check_val_every_n_epoch), in wall and in process CPU seconds; the first epoch of
each run is left out (warm-up). The overhead is the median over repeats of each repeat's paired
ratio (the two loops of one repeat run back to back, in alternating order). Both
sides use the same thread count, the same loaders and batch transform, and the same autocast
(trainer.precision), on the device Lightning would pick (a CUDA run is synchronized at each
epoch's end on both sides). `--json` writes the numbers for other benches (bench.gpu).
"""

import argparse
import contextlib
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from hylab.store import compose_for
from lightning_modules.classifier import smoothed_cross_entropy
from lightning_modules.optim import make_optimizer


def compose_run(experiment: str, overrides: list[str], workdir: Path):
    """The config `run.py experiment=<experiment> <overrides>` gets, with its run dir at `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)  # Hydra would have made it (provenance writes into it first)
    return compose_for(experiment, [*overrides, f"paths.output_dir={workdir}"], workdir / "logs")


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> list[float]:
    """[wall, CPU] seconds since `start`. CPU time of this process moves less than wall time
    when other work shares the machine (it leaves out the time the process waited)."""
    return [now - then for now, then in zip(clocks(), start)]


def device_of(cfg) -> torch.device:
    """The one device Lightning trains this config on."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so a clock read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EpochTimer(L.Callback):
    """(wall, process CPU) seconds of each training epoch, its validation included when one runs
    (Lightning validates before on_train_epoch_end), saved as JSON."""

    def __init__(self, path: str):
        self.path, self.times, self._start = Path(path), [], None

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = clocks()

    def on_train_epoch_end(self, trainer, pl_module):
        synchronize(pl_module.device)
        self.times.append(since(self._start))

    def on_fit_end(self, trainer, pl_module):
        self.path.write_text(json.dumps(self.times))


def hylab_epochs(experiment: str, overrides: list[str], workdir: Path) -> list[list[float]]:
    """The run as configured, plus the timer as one more callback (a config override)."""
    from hylab.runner import run

    times_file = workdir / "epoch_times.json"
    timer = f"+callbacks.epoch_timer={{_target_:bench.overhead.EpochTimer,path:'{times_file}'}}"
    run(compose_run(experiment, [*overrides, timer], workdir))
    return json.loads(times_file.read_text())


def autocast_for(precision, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    """The autocast Lightning's precision setting applies to forward and loss."""
    if str(precision).startswith("bf16"):
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if str(precision) not in ("32", "32-true"):
        raise SystemExit(f"trainer.precision={precision}: the plain loop mirrors 32 and bf16-mixed only")
    return contextlib.nullcontext()


def train_loss(cfg, net, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits) as the configured LightningModule trains: a DeiT student without a teacher
    learns the labels on both heads (DeiTClassifier), any other classifier on its one head."""
    eps = cfg.model.label_smoothing
    if str(cfg.model._target_).endswith("DeiTClassifier"):
        cls_logits, dist_logits = net(images, separate_heads=True)
        loss = 0.5 * F.cross_entropy(cls_logits, labels, label_smoothing=eps) + 0.5 * F.cross_entropy(dist_logits, labels, label_smoothing=eps)
        return loss, (cls_logits + dist_logits) / 2
    logits = net(images)
    return smoothed_cross_entropy(logits, labels, eps), logits


def step_schedulers(node, optimizer, total_steps: int, steps_per_epoch: int) -> list:
    """The per-step LR schedulers the recipe's schedule builds for `optimizer`, as Lightning steps
    them. None for a constant lr: `model/scheduler=none` (`optim.constant`) returns no scheduler
    without warm-up."""
    schedule = instantiate(node)(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch) if node else []
    if any(entry.get("interval") != "step" for entry in schedule):
        raise SystemExit("the plain loop mirrors per-step schedules only (not model/scheduler=plateau)")
    return [entry["scheduler"] for entry in schedule]


def plain_epochs(experiment: str, overrides: list[str], workdir: Path, step_times: list | None = None) -> list[list[float]]:
    """[wall, CPU, training images] of each epoch of a plain loop over the same data and net; with
    `step_times`, also appends each epoch's list of [wall, CPU] seconds per training step (from the
    end of one to the end of the next: the batch fetch included)."""
    cfg = compose_run(experiment, overrides, workdir)
    L.seed_everything(cfg.seed)
    device = device_of(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    net = instantiate(cfg.model.net).to(device)
    model = torch.compile(net) if cfg.model.get("compile") else net
    optimizer = make_optimizer(instantiate(cfg.model.optimizer), net)
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    steps_per_epoch = len(train_loader)
    schedulers = step_schedulers(cfg.model.scheduler, optimizer, steps_per_epoch * cfg.trainer.max_epochs, steps_per_epoch)
    val_every = cfg.trainer.check_val_every_n_epoch or 1
    autocast = functools.partial(autocast_for, cfg.trainer.precision, device.type)
    times = []
    for epoch in range(cfg.trainer.max_epochs):
        start = clocks()
        model.train()
        # epoch sums stay on the device (the module's epoch means do too): no sync per step
        correct, loss_sum, seen = torch.zeros((), device=device), torch.zeros((), device=device), 0
        steps, last = [], clocks()
        for images, labels in train_loader:
            images, labels = datamodule.transform_batch(images.to(device, non_blocking=True), labels.to(device, non_blocking=True), train=True)
            with autocast():
                loss, logits = train_loss(cfg, model, images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for scheduler in schedulers:
                scheduler.step()
            loss_sum += loss.detach()
            correct += (logits.argmax(-1) == labels).sum()
            seen += len(labels)
            if step_times is not None:
                steps.append(since(last))
                last = clocks()
        if step_times is not None:
            step_times.append(steps)
        if (epoch + 1) % val_every == 0:
            model.eval()
            with torch.no_grad(), autocast():
                val_correct = torch.zeros((), device=device)
                for images, labels in val_loader:
                    images, labels = datamodule.transform_batch(images.to(device, non_blocking=True), labels.to(device, non_blocking=True), train=False)
                    val_correct += (model(images).argmax(-1) == labels).sum()
        synchronize(device)
        times.append([*since(start), seen])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="fmnist_speed")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("overrides", nargs="*", help="further run.py overrides for both loops (the plain loop ignores trainer.limit_*)")
    args = parser.parse_args()
    # the recipe's own validation cadence, at this run length (fmnist_speed: after the last epoch)
    overrides = [f"trainer.max_epochs={args.epochs}", "test_after_fit=false", "store.register_runs=false", *args.overrides]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, experiment {args.experiment}, {args.epochs} epochs x {args.repeats} repeats")
    if compose_for(args.experiment, overrides).get("keep_freed_memory"):
        from hylab.allocator import keep_freed_memory

        # process-wide, as every run.py process sets it: both loops get the same allocator
        print(f"keep_freed_memory: {keep_freed_memory()}")
    per_epoch = {"hylab": [], "plain": []}
    ratios = []  # per repeat: (wall, CPU) median hylab / median plain
    loops = {"hylab": hylab_epochs, "plain": plain_epochs}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            # alternate which loop goes first, so a slow drift of the machine favours neither
            order = ("hylab", "plain") if repeat % 2 == 0 else ("plain", "hylab")
            medians = {}
            for name in order:
                times = loops[name](args.experiment, overrides, Path(tmp) / f"{name}{repeat}")[1:]
                per_epoch[name] += times
                medians[name] = [statistics.median(t[i] for t in times) for i in (0, 1)]
                print(f"  repeat {repeat} {name:5s}: " + " ".join(f"{t[0]:6.2f}" for t in times) + "  s/epoch wall, "
                      + " ".join(f"{t[1]:6.2f}" for t in times) + "  s/epoch CPU", flush=True)
            ratios.append([medians["hylab"][i] / medians["plain"][i] for i in (0, 1)])
    print()
    print("| loop  | epochs timed | median s/epoch (wall) | median s/epoch (CPU) |")
    print("|-------|--------------|-----------------------|----------------------|")
    for name in ("hylab", "plain"):
        values = per_epoch[name]
        print(f"| {name:5s} | {len(values):12d} | {statistics.median(v[0] for v in values):21.3f} | {statistics.median(v[1] for v in values):20.3f} |")
    print()
    print("| repeat | hylab / plain (wall) | hylab / plain (CPU) |")
    print("|--------|----------------------|---------------------|")
    for repeat, (wall, cpu) in enumerate(ratios):
        print(f"| {repeat:6d} | {wall:20.3f} | {cpu:19.3f} |")
    wall, cpu = (statistics.median(r[i] for r in ratios) for i in (0, 1))
    print(f"\noverhead, median over repeats of the paired ratio: {100 * (wall - 1):+.1f}% wall, {100 * (cpu - 1):+.1f}% CPU")
    if args.json:
        images = per_epoch["plain"][0][2]
        Path(args.json).write_text(json.dumps({
            "experiment": args.experiment, "overrides": overrides, "images_per_epoch": images, "ratios": ratios,
            "median_ratio": {"wall": wall, "cpu": cpu},
            "images_per_s": {name: images / statistics.median(v[0] for v in per_epoch[name]) for name in per_epoch},
        }, indent=1))


if __name__ == "__main__":
    main()
