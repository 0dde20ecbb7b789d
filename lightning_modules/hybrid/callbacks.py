"""EncoderFromStore: start a run from a pre-trained hybrid backbone (SupCon pre-training, or a
model trained on another data set), taken from the run store (trained once if absent, reused
after) or from a checkpoint.

mode:
- linear_probe: the backbone is frozen and kept in eval mode; only the head trains;
- finetune: everything trains;
- lora: only LoRA's A, B (model.net.lora.rank > 0), the head and the fusion layers train; the
  weights LoRA adapts stay frozen (the net's own rule), the rest of both streams is frozen too.
Runs in `setup`, before the optimizer is built, so frozen parameters never enter it.
"""

import logging

import lightning as L
from torch import nn

from hylab.checkpoints import check_shapes, load_net_and_config, load_stored_net
from hylab.errors import UserError
from lightning_modules.hybrid.nets.backbone import parameter_counts
from lightning_modules.hybrid.nets.lora import lora_weights, renamed_for_lora

log = logging.getLogger("hylab.hybrid")
KEY = "callbacks.encoder_from_store"


class EncoderFromStore(L.Callback):
    def __init__(self, mode: str = "linear_probe", experiment: str | None = None, overrides: list[str] | None = None,
                 checkpoint: str | None = None, store_dir: str | None = None, log_dir: str | None = None):
        if bool(experiment) == bool(checkpoint):
            raise UserError(f"{KEY} needs exactly one of experiment=<name> (from the run store) or checkpoint=<path>")
        self.mode, self.experiment, self.checkpoint = mode, experiment, checkpoint
        self.overrides = [str(o) for o in overrides or []]
        self.store_dir, self.log_dir = store_dir, log_dir
        self.source: dict = {}
        self.done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.done:
            return
        if not trainer.ckpt_path:  # a resumed run has its weights in its own checkpoint
            self._load(pl_module)
        self._freeze(pl_module.net)
        trainable, total = parameter_counts(pl_module.net)
        log.info(f"encoder mode={self.mode}: {trainable} of {total} parameters train ({100 * trainable / total:.2f} %)")
        self.done = True

    def _load(self, pl_module: L.LightningModule) -> None:
        if self.checkpoint:
            net, _ = load_net_and_config(self.checkpoint, f"{KEY}.checkpoint")
            self.source = {"checkpoint": str(self.checkpoint)}
        else:
            net, _, entry = load_stored_net(self.experiment, self.overrides, f"{KEY}.experiment", self.store_dir, self.log_dir)
            self.source = {"experiment": self.experiment, "overrides": self.overrides, "store_key": entry.key, "run_dir": entry.run_dir}
            log.info(f"encoder: run {entry.record.get('run_id')} of experiment={self.experiment} {' '.join(self.overrides)} from {entry.run_dir}")
        backbone: nn.Module = pl_module.net.backbone
        state = renamed_for_lora(backbone, net.backbone.state_dict())
        own = backbone.state_dict()
        lora_keys = {k for k in own if "lora_" in k}
        check_shapes(backbone, {**state, **{k: own[k] for k in lora_keys}}, f"{KEY} (the stored encoder)")
        backbone.load_state_dict({**own, **state})

    def _freeze(self, net: nn.Module) -> None:
        if self.mode == "finetune":
            return
        if self.mode == "lora":
            if not lora_weights(net):
                raise UserError(f"{KEY}.mode=lora needs LoRA in the net: set model.net.lora.rank (e.g. 8)")
            for name, p in net.backbone.named_parameters():
                p.requires_grad_("lora_" in name or name.startswith(("proj.", "norm.", "gate.")))
            return
        net.backbone.requires_grad_(False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.mode == "linear_probe":
            pl_module.net.backbone.eval()

    def state_dict(self) -> dict:
        return {"source": dict(self.source)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.source = state_dict.get("source", {})
