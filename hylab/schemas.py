"""The framework's own settings schemas (the top-level keys and the Trainer) and the check of a
whole composed config against every schema, run before torch is imported.

Families type their settings in `<family package>/settings.py` (see hylab/settings.py); the
Trainer's many other arguments are Lightning's to check, so its schema lists the ones a config
commonly sets and lets the rest through.
"""

from dataclasses import dataclass, field
from typing import Any, Literal

from omegaconf import DictConfig

from hylab.settings import LIBRARY_SCHEMAS, between, check_blocks, check_node, non_negative, parse_settings, positive

PRECISIONS = ("64", "32", "16", "bf16", "64-true", "32-true", "16-true", "bf16-true", "16-mixed", "bf16-mixed", "transformer-engine")
Batches = int | float | None


@dataclass
class RunSettings:
    task: str = "fit"
    task_name: str | None = None
    tags: list[str] = field(default_factory=list)
    seed: int | None = field(default=None, metadata=non_negative())
    ckpt_path: str | None = None
    # Continue the unfinished run of the same training config (hylab/resume.py).
    resume: bool = True
    test_after_fit: bool = True
    test_checkpoint: Literal["best", "last"] = "best"
    monitor: str | None = None
    mode: Literal["min", "max"] = "max"
    optimized_metric: str | None = None
    float32_matmul_precision: Literal["highest", "high", "medium"] | None = "high"
    keep_freed_memory: bool = True


@dataclass
class TrainerSettings:
    max_epochs: int | None = field(default=None, metadata=between(-1))
    min_epochs: int | None = field(default=None, metadata=non_negative())
    max_steps: int = field(default=-1, metadata=between(-1))
    min_steps: int | None = field(default=None, metadata=non_negative())
    # A time budget for fit, Lightning's: "DD:HH:MM:SS" or {days:, hours:, minutes:, seconds:}.
    max_time: str | dict[str, float] | None = None
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    num_nodes: int = field(default=1, metadata=positive())
    precision: int | str | None = None
    check_val_every_n_epoch: int | None = field(default=1, metadata=positive())
    val_check_interval: int | float | None = None
    log_every_n_steps: int | None = field(default=None, metadata=positive())
    accumulate_grad_batches: int = field(default=1, metadata=positive())
    gradient_clip_val: float | None = field(default=None, metadata=non_negative())
    gradient_clip_algorithm: Literal["norm", "value"] | None = None
    limit_train_batches: Batches = None
    limit_val_batches: Batches = None
    limit_test_batches: Batches = None
    limit_predict_batches: Batches = None
    overfit_batches: int | float = 0
    fast_dev_run: bool | int = False
    num_sanity_val_steps: int | None = field(default=None, metadata=between(-1))
    deterministic: bool | str | None = None
    benchmark: bool | None = None
    sync_batchnorm: bool = False
    strategy: Any = "auto"


@dataclass
class AdamWSettings:
    lr: float = field(default=1e-3, metadata=non_negative())  # 0 freezes (tests, probes)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = field(default=1e-8, metadata=positive())
    weight_decay: float = field(default=0.01, metadata=non_negative())
    amsgrad: bool = False
    maximize: bool = False
    fused: bool | None = None
    foreach: bool | None = None


@dataclass
class SGDSettings:
    lr: float = field(default=1e-3, metadata=non_negative())  # 0 freezes (tests, probes)
    momentum: float = field(default=0.0, metadata=between(0, 1))
    dampening: float = field(default=0.0, metadata=between(0, 1))
    weight_decay: float = field(default=0.0, metadata=non_negative())
    nesterov: bool = False
    fused: bool | None = None
    foreach: bool | None = None


@dataclass
class MuonSettings:
    lr: float = field(default=1e-3, metadata=non_negative())  # 0 freezes (tests, probes)
    weight_decay: float = field(default=0.1, metadata=non_negative())
    momentum: float = field(default=0.95, metadata=between(0, 1))
    nesterov: bool = True
    ns_steps: int = field(default=5, metadata=positive())
    eps: float = field(default=1e-7, metadata=positive())
    adjust_lr_fn: str | None = None
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315)


@dataclass
class EarlyStoppingSettings:
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = field(default=3, metadata=non_negative())
    min_delta: float = field(default=0.0, metadata=non_negative())
    check_finite: bool = True
    verbose: bool = False
    strict: bool = True
    stopping_threshold: float | None = None
    divergence_threshold: float | None = None
    check_on_train_epoch_end: bool | None = None
    log_rank_zero_only: bool = False


LIBRARY_SCHEMAS.update({
    "torch.optim.AdamW": AdamWSettings,
    "torch.optim.Adam": AdamWSettings,
    "torch.optim.SGD": SGDSettings,
    "torch.optim.Muon": MuonSettings,
    "lightning.pytorch.callbacks.EarlyStopping": EarlyStoppingSettings,
})


def _check_precision(value) -> None:
    from hylab.errors import UserError

    if value is not None and str(value) not in PRECISIONS:
        raise UserError(f"trainer.precision={value!r} is not allowed; choose one of: {', '.join(PRECISIONS)}")


def _check_batches(settings: TrainerSettings) -> None:
    from hylab.errors import UserError

    for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches"):
        value = getattr(settings, name)
        if isinstance(value, float) and not 0.0 <= value <= 1.0:
            raise UserError(f"trainer.{name}={value!r} is out of range; a fraction lies in [0, 1], a count is an integer >= 0")
        if isinstance(value, int) and value < 0:
            raise UserError(f"trainer.{name}={value!r} is out of range; a count is an integer >= 0")


TIME_UNITS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")
MAX_TIME_FIX = "give DD:HH:MM:SS (e.g. 00:01:30:00) or {hours: 1, minutes: 30}"


def _check_max_time(value) -> None:
    """trainer.max_time in a form Lightning's Timer reads, and more than zero."""
    from datetime import timedelta

    from hylab.errors import UserError

    if value is None:
        return
    if isinstance(value, str):
        parts = value.strip().split(":")
        if len(parts) != 4 or not all(part.isdigit() for part in parts):
            raise UserError(f"trainer.max_time={value!r} is not a duration; {MAX_TIME_FIX}")
        budget = timedelta(days=int(parts[0]), hours=int(parts[1]), minutes=int(parts[2]), seconds=int(parts[3]))
    else:
        unknown = sorted(set(value) - set(TIME_UNITS))
        if unknown or any(amount < 0 for amount in value.values()):
            raise UserError(f"trainer.max_time={value!r} is not a duration (units: {', '.join(TIME_UNITS)}, none negative); {MAX_TIME_FIX}")
        budget = timedelta(**value)
    if budget.total_seconds() <= 0:
        raise UserError(f"trainer.max_time={value!r} leaves no time to train; {MAX_TIME_FIX}")


def check_values(cfg: DictConfig) -> None:
    """Every typed setting of the run: top-level keys, the Trainer, each object node of the
    model, data, callbacks and loggers against its family's schema, and the top-level blocks its
    tasks read (a family's `BLOCKS`). Imports no torch."""
    parse_settings(RunSettings, cfg, "", allow_extra=True)
    if cfg.get("trainer"):
        trainer = parse_settings(TrainerSettings, cfg.trainer, "trainer", allow_extra=True)
        _check_precision(trainer.precision)
        _check_batches(trainer)
        _check_max_time(trainer.max_time)
    for group in ("data", "model"):  # data first: the model interpolates some of its keys
        if cfg.get(group):
            check_node(cfg[group], group)
    for group in ("callbacks", "logger"):
        for name, node in (cfg.get(group) or {}).items():
            if isinstance(node, DictConfig):
                check_node(node, f"{group}.{name}")
    check_blocks(cfg)
