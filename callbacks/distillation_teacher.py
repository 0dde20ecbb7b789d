"""The distillation teacher: a frozen, eval-mode net that is not part of the student module.

Why a callback and not a submodule: SWA and EMA deep-copy the LightningModule (a teacher inside
would be copied and averaged) and SWA resets the BatchNorm statistics of every module it finds
(it would wipe the teacher's). Here the teacher is in no state_dict, optimizer or averaged copy.

Where the teacher comes from is a hylab.net_source.NetSource (exactly one of):
- `checkpoint`: a hylab checkpoint (the net is rebuilt from the config embedded in it);
- `experiment` (+ `overrides`): that experiment's finished run from the run store, found by the
  hash of its training config; trained first, once, if the store has none (hylab/store.py).
It is resolved when the callback is built for a fit (before any student training, and under
DDP on rank 0 before the other ranks are launched).

Each training step: Lightning moves the batch to the device and the datamodule mixes it
(on_after_batch_transfer), then calls on_train_batch_start, where this callback runs the teacher
under no_grad on those same (mixed) images, on the batch's device and in the run's precision
context, and hands the outputs to the student module (`receive_teacher_outputs`).
"""

import logging

import lightning as L
import torch
from torch import nn

from hylab.checkpoints import load_from_source
from hylab.errors import UserError
from hylab.net_source import net_source
from lightning_modules.image.module import TeacherOutputs
from lightning_modules.image.nets.deit_features import layer_count, logits_and_token_maps

log = logging.getLogger("hylab.distillation")
KEY = "callbacks.distillation_teacher"


class DistillationTeacher(L.Callback):
    provides_teacher_outputs = True  # the student module checks for this before fitting

    def __init__(
        self,
        checkpoint: str | None = None,
        experiment: str | None = None,
        overrides: list[str] | None = None,
        log_dir: str | None = None,
        store_dir: str | None = None,
        task: str = "fit",
        compile: bool = False,
        baseline: str | None = None,
    ):
        self.source_settings = net_source(locals(), KEY)
        self.checkpoint, self.experiment = checkpoint, experiment
        self.overrides = self.source_settings.overrides
        self.log_dir, self.store_dir, self.compile = log_dir, store_dir, compile
        self.baseline = baseline
        self.teacher_score: dict = {}
        self.net: nn.Module | None = None
        self.source: dict = {}
        self.teacher_data: dict = {}
        if task == "fit":  # evaluating a student needs no teacher
            net, config = self._load()
            self.teacher_data = config.get("data") or {}
            net.requires_grad_(False)
            self.net = net.eval()

    def _load(self) -> tuple[nn.Module, dict]:
        """(net, its run config) from the checkpoint or the run store."""
        net, config, found = load_from_source(self.source_settings, f"{KEY}.checkpoint")
        self.source = found.record
        self.teacher_score = {k: round(v, 4) for k, v in found.metrics.items() if k in ("test/acc", "val/acc_best") and isinstance(v, float)}
        where = f"checkpoint {self.checkpoint}" if self.checkpoint else (
            f"run {found.record['run_id']} of experiment={self.experiment} {' '.join(self.overrides)} "
            f"(store key {found.record['store_key']}, {self.teacher_score}) from {found.record['run_dir']}")
        log.info(f"distillation teacher: {where}")
        return net, config

    # -- checks before training ----------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.net is None:
            raise UserError("callbacks.distillation_teacher was built with task != fit; it has no teacher to run")
        if not hasattr(pl_module, "receive_teacher_outputs"):
            raise UserError(f"callbacks.distillation_teacher needs a student that takes teacher outputs (model=deit_classifier), not {type(pl_module).__name__}")
        if not pl_module.needs_teacher:
            log.warning("callbacks.distillation_teacher is set but the model uses no teacher (model.distillation.mode=none, no token distillation)")
        self._check_fits(trainer, pl_module)
        if self.compile:
            self.net.compile()

    def _check_fits(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        data = trainer.datamodule.hparams if trainer.datamodule is not None else None
        num_classes = pl_module.hparams.num_classes
        if data is not None:
            probe = torch.zeros(2, data.in_chans, data.image_size, data.image_size)
            try:
                with torch.no_grad():
                    logits = self.net(probe)
            except RuntimeError as err:
                raise UserError(f"the distillation teacher cannot read {data.in_chans}x{data.image_size}x{data.image_size} images: {err}") from err
            if logits.shape[-1] != num_classes:
                raise UserError(f"the distillation teacher predicts {logits.shape[-1]} classes, the student {num_classes}: use a teacher trained on the same data")
            self._check_same_data(data)
        layers = pl_module.teacher_token_layers()
        if layers:
            available = layer_count(self.net)
            if any(not 0 <= layer < available for layer in layers):
                raise UserError(f"model.token_distillation.teacher_layers={layers}: the teacher ({type(self.net).__name__}) has layers 0..{available - 1}")
            if data is not None:
                with torch.no_grad():
                    _, maps = logits_and_token_maps(self.net, probe, layers)
                dims = [m.shape[1] for m in maps]
                if dims != list(pl_module.tokens.teacher_dims):
                    raise UserError(f"model.token_distillation.teacher_dims={list(pl_module.tokens.teacher_dims)} but the teacher's layers {layers} have {dims} channels: set teacher_dims={dims}")

    def _check_same_data(self, data) -> None:
        """The teacher should have seen the same images, normalized the same way."""
        teacher_source = self.teacher_data.get("source")
        if teacher_source is not None and teacher_source != data.source:
            log.warning(f"the distillation teacher was trained on data={teacher_source}, the student trains on data={data.source}")

    # -- every training step -------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if not pl_module.needs_teacher:
            return
        images = batch[0]
        net = self._on_device(images.device)
        layers = pl_module.teacher_token_layers()
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            if layers:
                logits, maps = logits_and_token_maps(net, images, layers)
            else:
                logits, maps = net(images), []
        pl_module.receive_teacher_outputs(TeacherOutputs(logits.float(), [m.float() for m in maps]))

    def _on_device(self, device: torch.device) -> nn.Module:
        if next(self.net.parameters()).device != device:
            self.net.to(device)
        if self.net.training:  # nobody should switch it, but a frozen teacher must stay in eval mode
            self.net.eval()
        return self.net

    # -- after the test: how the student compares ----------------------------------------------
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        student = trainer.callback_metrics.get("test/acc")
        if student is None or not trainer.is_global_zero:
            return
        student = float(student)
        parts = [f"student test/acc {student:.4f}"]
        teacher = self.teacher_score.get("test/acc")
        if teacher is not None:
            parts.append(f"teacher ({self.experiment}) {teacher:.4f}: {100 * (student - teacher):+.1f} points")
        if self.baseline:
            parts.append(self._baseline_part(student))
        log.info(" | ".join(parts))

    def _baseline_part(self, student: float) -> str:
        """The baseline experiment run with this run's own overrides, if the store holds it."""
        overrides = baseline_overrides()
        if overrides is None:
            return f"{self.baseline}: unknown (not run from run.py)"
        from hylab.store import RunStore, compose_for, training_hash

        command = " ".join(["python run.py", f"experiment={self.baseline}", *overrides])
        cfg = compose_for(self.baseline, overrides, self.log_dir)
        entry = RunStore(self.store_dir or cfg.store.dir).find(training_hash(cfg))
        score = ((entry.record.get("metrics") or {}) if entry else {}).get("test/acc")
        if score is None:
            return f"{self.baseline} with the same overrides: not in the store (`{command}` trains it)"
        return f"{self.baseline} with the same overrides {score:.4f}: {100 * (student - score):+.1f} points (run {entry.run_dir})"

    def state_dict(self) -> dict:
        """Where the teacher came from (not its weights: they live in its own checkpoint)."""
        return {"source": dict(self.source)}


# Overrides that make a run a distillation run, or only place it: not carried over to the baseline.
NOT_FOR_BASELINE = ("experiment", "callbacks.distillation_teacher", "model.distillation", "model.token_distillation",
                    "paths.", "hydra.", "store.", "ckpt_path", "task", "resume", "callbacks.progress_bar")


def baseline_overrides() -> list[str] | None:
    """This Hydra job's command-line overrides that the baseline (same budget) should share."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    overrides = [str(o) for o in HydraConfig.get().overrides.task]
    return [o for o in overrides if not o.lstrip("+~").startswith(NOT_FOR_BASELINE)]
