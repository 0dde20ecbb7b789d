"""Optimizer and learning-rate schedule wiring shared by every family.

Optimizers come from config as partials (`_partial_: true`); `configure_optimizers` below turns
one into param groups (no weight decay on norms, biases and the net's `no_weight_decay()`
names), turns on the fused kernel when every parameter is on CUDA, and adds the schedule.

Schedules are written as multipliers of the configured lr at optimizer step t, one formula each,
with an optional linear warm-up `w(t) = min(1, (t + 1) / W)` in front. They run as one
`LambdaLR` stepped every optimizer step, so an epoch-wise schedule (step, exponential) is
the same curve quantized to epochs. Plateau is metric-driven and stepped per epoch instead.
"""

import inspect
import math
from collections.abc import Callable, Mapping
from functools import partial

import torch
from torch import nn

from hylab.errors import UserError

Schedule = Callable[[int], float]


def warmup_factor(step: int, warmup_steps: int) -> float:
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def cosine_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """min + (1 - min) * (1 + cos(pi * p)) / 2, p the fraction of post-warm-up steps done."""
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear_decay_factor(step: int, total_steps: int, warmup_steps: int, final_lr_ratio: float) -> float:
    """1 at the end of warm-up, falling linearly to final_lr_ratio at the last step."""
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, progress))
    return 1.0 + (final_lr_ratio - 1.0) * progress


def triangle_factor(step: int, half_cycle_steps: int, base_lr_ratio: float) -> float:
    """base at t = 0, peak 1.0 at t = half cycle, base again at a full cycle."""
    phase = (step / max(1, half_cycle_steps)) % 2.0
    return base_lr_ratio + (1.0 - base_lr_ratio) * (1.0 - abs(phase - 1.0))


def lambda_schedule(optimizer, warmup_steps: int, main: Schedule) -> list[dict]:
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda t: warmup_factor(t, warmup_steps) * main(t)
    )
    return [{"scheduler": scheduler, "interval": "step", "frequency": 1}]


def constant(optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0):
    """The configured lr throughout: no scheduler at all, or only the warm-up when one is asked for."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: 1.0) if warmup > 0 else []


def cosine(optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0, min_lr_ratio: float = 0.0):
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: cosine_factor(t, total_steps, warmup, min_lr_ratio))


def one_cycle(optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0, final_lr_ratio: float = 0.0):
    """Linear warm-up to the lr, then linear decay to final_lr_ratio * lr (the one-cycle shape of
    the speed-run recipes; Smith & Topin 2017)."""
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: linear_decay_factor(t, total_steps, warmup, final_lr_ratio))


def step(optimizer, total_steps: int, steps_per_epoch: int, step_epochs: int = 10, gamma: float = 0.1, warmup_epochs: float = 0):
    period = max(1, step_epochs * steps_per_epoch)
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: gamma ** (t // period))


def exponential(optimizer, total_steps: int, steps_per_epoch: int, gamma: float = 0.95, warmup_epochs: float = 0):
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: gamma ** (t // max(1, steps_per_epoch)))


def cyclic(optimizer, total_steps: int, steps_per_epoch: int, base_lr_ratio: float = 0.1, half_cycle_epochs: float = 2, warmup_epochs: float = 0):
    half = max(1, round(half_cycle_epochs * steps_per_epoch))
    warmup = round(warmup_epochs * steps_per_epoch)
    return lambda_schedule(optimizer, warmup, lambda t: triangle_factor(t, half, base_lr_ratio))


def plateau(optimizer, total_steps: int, steps_per_epoch: int, monitor: str, mode: str = "max", factor: float = 0.5, patience: int = 3, warmup_epochs: float = 0):
    schedulers = []
    warmup = round(warmup_epochs * steps_per_epoch)
    if warmup > 0:
        # LinearLR is chainable: it scales the lr during warm-up and leaves it alone afterwards,
        # so it composes with the plateau reductions instead of overwriting them.
        linear = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0 / warmup, 1.0, total_iters=warmup - 1)
        schedulers.append({"scheduler": linear, "interval": "step", "frequency": 1})
    reduce = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience)
    schedulers.append({"scheduler": reduce, "interval": "epoch", "frequency": 1, "monitor": monitor})
    return schedulers


def owning_prefix(name: str, prefixes: list[str]) -> str | None:
    """The longest prefix that names `name` or one of its parent modules."""
    owners = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def scale_group_lrs(groups: list[dict], module: nn.Module, base_lr: float, lr_scales: Mapping[str, float]) -> list[dict]:
    """Split param groups so the parameters under each prefix of `lr_scales` (dotted names, as in
    `module.named_parameters()`) train at base_lr * scale; the rest keep base_lr."""
    names = {id(param): name for name, param in module.named_parameters()}
    prefixes = list(lr_scales)
    used = set()
    scaled = []
    for group in groups:
        by_prefix: dict[str | None, list] = {}
        for param in group["params"]:
            prefix = owning_prefix(names[id(param)], prefixes)
            by_prefix.setdefault(prefix, []).append(param)
            used.add(prefix)
        for prefix, params in by_prefix.items():
            scale = 1.0 if prefix is None else float(lr_scales[prefix])
            scaled.append({**group, "params": params, "lr": base_lr * scale})
    unknown = [p for p in prefixes if p not in used]
    if unknown:
        trainable = sorted({name.split(".")[0] for name, p in module.named_parameters() if p.requires_grad})
        raise UserError(f"lr scales {unknown} name no trainable parameter (misspelled or frozen); trainable top-level names: {trainable}")
    return scaled


def make_optimizer(factory: partial, module: nn.Module, lr_scales: Mapping[str, float] | None = None) -> torch.optim.Optimizer:
    """Build the optimizer from its partial with weight-decay param groups (and fused on CUDA).

    Frozen parameters (requires_grad False) are left out. `lr_scales` maps parameter-name
    prefixes to learning-rate multipliers (layer-wise rates for fine-tuning)."""
    from timm.optim import param_groups_weight_decay

    skip = set()
    for prefix, child in module.named_modules():
        if hasattr(child, "no_weight_decay") and child is not module:
            skip |= {f"{prefix}.{name}" for name in child.no_weight_decay()}
    weight_decay = factory.keywords.get("weight_decay", 0.0)
    groups = param_groups_weight_decay(module, weight_decay, no_weight_decay_list=skip)
    groups = [group for group in groups if group["params"]]
    if not groups:
        raise UserError("every parameter is frozen: there is nothing to train")
    if lr_scales:
        base_lr = factory.keywords.get("lr", inspect.signature(factory.func).parameters["lr"].default)
        groups = scale_group_lrs(groups, module, base_lr, lr_scales)
    extra = {}
    params = [p for group in groups for p in group["params"]]
    accepts_fused = "fused" in inspect.signature(factory.func).parameters
    if accepts_fused and "fused" not in factory.keywords and params and all(p.is_cuda for p in params):
        extra["fused"] = True
    return factory(groups, **extra)


def configure_optimizers(module, optimizer_factory: partial, scheduler_factory: partial | None, lr_scales: Mapping[str, float] | None = None):
    """What a LightningModule's `configure_optimizers` returns, for one optimizer and its schedule."""
    return with_schedule(module, make_optimizer(optimizer_factory, module, lr_scales), scheduler_factory)


def with_schedule(module, optimizer: torch.optim.Optimizer, scheduler_factory: partial | None):
    """`optimizer` and the schedule `scheduler_factory` builds for it over the trainer's run.

    No schedule (None, or a factory that returns no scheduler, as `constant` does without
    warm-up) gives the optimizer alone."""
    if scheduler_factory is None:
        return optimizer
    if not callable(scheduler_factory):
        raise UserError(
            f"model.scheduler={scheduler_factory!r} is not a schedule: select one with model/scheduler=<name> "
            "(none for a constant lr), or give a node with _target_ and _partial_: true"
        )
    trainer = module.trainer
    total_steps = trainer.estimated_stepping_batches
    if not math.isfinite(total_steps):
        raise UserError("an lr schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
    total_steps = int(total_steps)
    # estimated_stepping_batches has set up the train loader, so its length is known (per rank).
    batches = trainer.num_training_batches
    if math.isfinite(batches):
        steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
    else:
        steps_per_epoch = max(1, total_steps // max(1, trainer.max_epochs or 1))
    schedulers = scheduler_factory(optimizer, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return ([optimizer], schedulers) if schedulers else optimizer
