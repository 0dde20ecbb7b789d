"""Framework cost per training step, in milliseconds: a small net trained through hylab's run path
(the function run.py calls, default callbacks, checkpoints, CSV logger) and as a plain PyTorch loop
(bench/overhead.py's), alternating in one process. On a net whose step takes a few milliseconds
(experiment=mlp_fmnist: lightning-hydra-template's 784-64-128-64-10 dense net on Fashion-MNIST,
batch 128) the framework's share shows in full.

    uv run python -m bench.overhead_steps                                   # experiment=mlp_fmnist
    uv run python -m bench.overhead_steps --variant no_guard=callbacks.non_finite_guard=null
    uv run python -m bench.overhead_steps --floor                           # Lightning's own floor
    uv run python -m bench.overhead_steps --pieces                          # small per-step pieces alone

Each `--variant NAME=OVERRIDE[,OVERRIDE...]` adds one more hylab loop with those overrides to the
rotation, so a lever is measured against the same plain loop in the same rounds. Two measures,
in wall and in process-CPU milliseconds, the first epoch of each run left out (warm-up):

- per step: every training step is timed (from one step's start to the next: the batch fetch,
  the hooks and the logging included); a quantile of those times (`--quantile`, the median by
  default; 0.1 on a machine shared with other jobs, which slow some steps and not others) minus
  the plain loop's, per repeat;
- per epoch: the median epoch time (training steps plus the recipe's validation pass) minus the
  plain loop's, divided by the training steps of an epoch: validation and epoch ends included.

The table gives the median over repeats of each repeat's paired difference.

`--floor` times Lightning alone: a LightningModule whose step is one multiply of a one-element
parameter, with no callbacks, logger, checkpoint or progress bar, against the same step as a bare
loop; with automatic optimization (Lightning's optimizer-step closure) and with manual
optimization; and with ten callbacks that do nothing (the cost of Lightning's hook dispatch: it
calls every hook of every callback, overridden or not).
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from bench.overhead import EpochTimer, clocks, compose_run, plain_epochs, since
from hylab.store import compose_for
from lightning_modules.classifier import Classifier, hard_labels


class StepTimer(L.Callback):
    """(wall, process CPU) seconds of each epoch, as bench.overhead.EpochTimer, and of each training
    step: from one on_train_batch_start to the next (the batch fetch, every hook and the logging
    included), saved as JSON."""

    def __init__(self, path: str):
        self.path, self.epochs, self.steps = Path(path), [], []
        self._epoch_start = self._step_start = None

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_start, self._step_start = clocks(), None
        self.steps.append([])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._step_start is not None:
            self.steps[-1].append(since(self._step_start))
        self._step_start = clocks()

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append(since(self._epoch_start))

    def on_fit_end(self, trainer, pl_module):
        self.path.write_text(json.dumps({"epochs": self.epochs, "steps": self.steps}))


def hylab_run(experiment: str, overrides: list[str], workdir: Path) -> tuple[list, list]:
    """Epoch and step times of one run through hylab's run path (the timer is one more callback)."""
    from hylab.runner import run

    times_file = workdir / "times.json"
    timer = f"+callbacks.step_timer={{_target_:bench.overhead_steps.StepTimer,path:'{times_file}'}}"
    run(compose_run(experiment, [*overrides, timer], workdir))
    times = json.loads(times_file.read_text())
    return times["epochs"], times["steps"]


def plain_run(experiment: str, overrides: list[str], workdir: Path) -> tuple[list, list]:
    steps: list = []
    epochs = plain_epochs(experiment, overrides, workdir, step_times=steps)
    return epochs, steps


def train_steps_per_epoch(experiment: str, overrides: list[str]) -> int:
    cfg = compose_for(experiment, overrides)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    return len(datamodule.train_dataloader())


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name or not overrides:
        raise SystemExit(f"--variant {text!r}: write NAME=OVERRIDE[,OVERRIDE...]")
    return name, overrides.split(",")


def medians(times: list[list[float]]) -> list[float]:
    return [statistics.median(t[i] for t in times) for i in (0, 1)]


def quantiles(times: list[list[float]], q: float) -> list[float]:
    """The q-quantile of [wall, CPU] over the steps. A low one (q = 0.1) is the step as it runs
    when the machine's other jobs leave it alone: on a shared machine they slow some steps
    (caches, memory bandwidth) and the median moves with them."""
    return [statistics.quantiles([t[i] for t in times], n=100)[round(100 * q) - 1] for i in (0, 1)]


def loop_costs(args, overrides: list[str]) -> None:
    steps = train_steps_per_epoch(args.experiment, overrides)
    loops = {"plain": (plain_run, []), "hylab": (hylab_run, [])}
    for text in args.variant:
        name, extra = parse_variant(text)
        compose_for(args.experiment, [*overrides, *extra])  # a typo fails now, not after an hour
        loops[name] = (hylab_run, extra)
    names = list(loops)
    # per loop, per repeat: median [wall, CPU] seconds of a step, and of an epoch
    step_medians: dict[str, list[list[float]]] = {name: [] for name in names}
    epoch_medians: dict[str, list[list[float]]] = {name: [] for name in names}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, experiment {args.experiment}, "
          f"{steps} training steps an epoch, {args.epochs} epochs x {args.repeats} repeats")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = names[repeat % len(names):] + names[:repeat % len(names)]  # rotate who goes first
            for name in order:
                function, extra = loops[name]
                epochs, step_times = function(args.experiment, [*overrides, *extra], Path(tmp) / f"{name}{repeat}")
                # the first epoch is warm-up
                step_medians[name].append(quantiles([t for epoch in step_times[1:] for t in epoch], args.quantile))
                epoch_medians[name].append(medians(epochs[1:]))
                (sw, sc), (ew, ec) = step_medians[name][-1], epoch_medians[name][-1]
                print(f"  repeat {repeat} {name:>14s}: step (q {args.quantile}) {1e3 * sw:6.3f} ms wall {1e3 * sc:6.3f} ms CPU; "
                      f"epoch {ew:6.3f} s wall {ec:6.3f} s CPU", flush=True)
    report(names, step_medians, epoch_medians, steps, args.quantile)


def report(names, step_medians, epoch_medians, steps: int, q: float) -> None:
    plain_step, plain_epoch = step_medians["plain"], epoch_medians["plain"]
    print(f"\nplain loop: step {1e3 * statistics.median(p[0] for p in plain_step):.3f} ms wall, "
          f"{1e3 * statistics.median(p[1] for p in plain_step):.3f} ms CPU (step time quantile {q}, median over repeats)")
    print(f"\nPer step: the {q}-quantile of the step times minus the plain loop's, same repeat; median over repeats (per repeat, CPU)")
    print("Per epoch: (median epoch time minus the plain loop's) / training steps: validation and epoch ends included\n")
    print("| loop | step cost, ms wall | ms CPU | hylab / plain step, wall | CPU | epoch cost per step, ms wall | ms CPU | per repeat, step ms CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names[1:]:
        step_cost = [[1e3 * (m[i] - p[i]) for i in (0, 1)] for m, p in zip(step_medians[name], plain_step)]
        step_ratio = [[m[i] / p[i] for i in (0, 1)] for m, p in zip(step_medians[name], plain_step)]
        epoch_cost = [[1e3 * (m[i] - p[i]) / steps for i in (0, 1)] for m, p in zip(epoch_medians[name], plain_epoch)]
        sc, sr, ec = (medians(x) for x in (step_cost, step_ratio, epoch_cost))
        spread = " ".join(f"{c[1]:.3f}" for c in step_cost)
        print(f"| {name} | {sc[0]:.3f} | {sc[1]:.3f} | {sr[0]:.3f} | {sr[1]:.3f} | {ec[0]:.3f} | {ec[1]:.3f} | {spread} |")


class BatchLoggedClassifier(Classifier):
    """The classifier with evaluation metrics logged at every batch, as it did before they were
    logged once per epoch: `--variant batch_logged=model._target_=bench.overhead_steps.BatchLoggedClassifier`
    measures that change in the same rounds."""

    def _evaluate(self, batch, stage: str) -> torch.Tensor:
        x, labels = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True, prog_bar=True)
        accuracy = self.val_acc if stage == "val" else self.test_acc
        accuracy(logits, labels)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=True)
        return logits

    def on_validation_epoch_end(self) -> None:
        self.best.update_and_log(self, {"val/acc": self.val_acc.compute()})

    def _log_evaluation(self, stage: str) -> dict:
        return {}


class StepAccuracyClassifier(Classifier):
    """The classifier with its training accuracy updated through torchmetrics at every step, as
    before it kept the step's classes and updated once per epoch."""

    def track_train_accuracy(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.train_acc.update(logits, hard_labels(target))


class PerStepClassifier(BatchLoggedClassifier, StepAccuracyClassifier):
    """Both: the classifier's per-step metric work as it was before."""


class EmptyStep(L.LightningModule):
    """One multiply of a one-element parameter per step: what is left is Lightning's own work."""

    def __init__(self, manual: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))
        self.automatic_optimization = not manual

    def training_step(self, batch, batch_idx):
        loss = (self.weight * batch).sum()
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def lightning_empty(batches, manual: bool, idle_callbacks: int = 0) -> list[float]:
    timer = EpochTimer(path="/dev/null")
    idle = [L.Callback() for _ in range(idle_callbacks)]  # hooks that do nothing: the cost of dispatch alone
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer, *idle], num_sanity_val_steps=0, accelerator="cpu")
    trainer.fit(EmptyStep(manual), train_dataloaders=batches)
    return timer.times[0]


def plain_empty(batches, manual: bool, idle_callbacks: int = 0) -> list[float]:
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=1e-3)
    start = clocks()
    for batch in batches:
        loss = (weight * batch).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return since(start)


def floor(args) -> None:
    # one loader for both (no collation: it hands out the stored tensors), as Lightning wants a loader
    batches = torch.utils.data.DataLoader([torch.ones(4) for _ in range(args.floor_steps)], batch_size=None)
    loops = {"empty loop": (plain_empty, False, 0), "Lightning, automatic": (lightning_empty, False, 0),
             "Lightning, manual": (lightning_empty, True, 0),
             "Lightning, automatic, 10 idle callbacks": (lightning_empty, False, 10)}
    names = list(loops)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            function, manual, idle = loops[name]
            times[name].append([1e3 * t / len(batches) for t in function(batches, manual, idle)])
    print(f"\n{len(batches)} steps x {args.repeats} repeats, ms per step (median over repeats)")
    print("\n| loop | ms wall | ms CPU | over the empty loop, ms CPU |")
    print("|---|---|---|---|")
    base = statistics.median(t[1] for t in times["empty loop"])
    for name in names:
        wall, cpu = (statistics.median(t[i] for t in times[name]) for i in (0, 1))
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {cpu - base:.3f} |")


def per_call_us(function, calls: int = 3000, rounds: int = 5) -> float:
    """Process-CPU microseconds of one call, the best of `rounds` rounds (the least disturbed)."""
    for _ in range(100):
        function()
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            function()
        best = min(best, (time.process_time() - start) / calls * 1e6)
    return best


def pieces(args) -> None:
    """Per-step pieces of the default callbacks and the classifier, timed alone on the mlp_fmnist
    net and a batch of 128: too small for the paired runs to resolve on a shared machine."""
    from torchmetrics.classification import MulticlassAccuracy

    from lightning_modules.image.nets.mlp import MLP

    net, x, y = MLP(), torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    grads, logits = [p.grad for p in net.parameters()], logits.detach()
    accuracy, kept = MulticlassAccuracy(10, average="micro"), []
    rows = {
        "guard, every step before: total gradient norm, isfinite, read": lambda: bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))),
        "guard, every step now: isfinite of the loss, read": lambda: bool(torch.isfinite(loss.detach()).all()),
        "train accuracy before: MulticlassAccuracy.update": lambda: accuracy.update(logits, y),
        "train accuracy now: argmax, keep": lambda: kept.append((logits.argmax(dim=-1), y)) or (len(kept) > 10000 and kept.clear()),
    }
    print("\n| per-step piece | us CPU per call (best of 5 x 3000) |")
    print("|---|---|")
    for name, function in rows.items():
        print(f"| {name} | {per_call_us(function):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="mlp_fmnist")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--variant", action="append", default=[], help="NAME=OVERRIDE[,OVERRIDE...]: one more hylab loop")
    parser.add_argument("--quantile", type=float, default=0.5, help="of the step times: 0.5 the median, 0.1 the undisturbed step")
    parser.add_argument("--floor", action="store_true", help="time Lightning's own floor instead")
    parser.add_argument("--floor-steps", type=int, default=3000)
    parser.add_argument("--pieces", action="store_true", help="time per-step pieces of the callbacks and classifier alone")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("overrides", nargs="*", help="further run.py overrides for every loop")
    args = parser.parse_args()
    if args.threads:
        # one thread measures the Python side best on a shared machine: idle OpenMP workers spin
        torch.set_num_threads(args.threads)
    if args.floor:
        return floor(args)
    if args.pieces:
        return pieces(args)
    overrides = [f"trainer.max_epochs={args.epochs}", "test_after_fit=false", "store.register_runs=false", *args.overrides]
    if compose_for(args.experiment, overrides).get("keep_freed_memory"):
        from hylab.allocator import keep_freed_memory

        print(f"keep_freed_memory: {keep_freed_memory()}")  # process-wide: both loops get it
    loop_costs(args, overrides)


if __name__ == "__main__":
    main()
