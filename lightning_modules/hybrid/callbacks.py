"""EncoderFromStore: start a run from a pre-trained hybrid backbone (SupCon pre-training, or a
model trained on another data set), taken from the run store (trained once if absent, reused
after) or from a checkpoint.

mode:
- linear_probe: the backbone is frozen and kept in eval mode; only the head trains;
- finetune: everything trains;
- lora: only LoRA's A, B (model.net.lora.rank > 0), the head and the fusion layers train; the
  weights LoRA adapts stay frozen (the net's own rule), the rest of both streams is frozen too.
Where the encoder comes from is a hylab.net_source.NetSource; the freezing goes through
Lightning's BaseFinetuning hook (callbacks/frozen_parts.py), before the optimizer is built, so
frozen parameters never enter it.
"""

import logging

import lightning as L
from torch import nn

from callbacks.frozen_parts import FrozenParts
from hylab.checkpoints import check_shapes, load_from_source
from hylab.errors import UserError
from hylab.net_source import net_source
from lightning_modules.hybrid.nets.backbone import parameter_counts
from lightning_modules.hybrid.nets.lora import lora_weights, renamed_for_lora

log = logging.getLogger("hylab.hybrid")
KEY = "callbacks.encoder_from_store"


class EncoderFromStore(FrozenParts):
    def __init__(self, mode: str = "linear_probe", experiment: str | None = None, overrides: list[str] | None = None,
                 checkpoint: str | None = None, store_dir: str | None = None, log_dir: str | None = None):
        super().__init__()
        self.source_settings = net_source(locals(), KEY)
        self.mode, self.experiment, self.checkpoint = mode, experiment, checkpoint
        self.overrides = self.source_settings.overrides
        self.source: dict = {}
        self.done = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.done:
            return
        if not trainer.ckpt_path:  # a resumed run has its weights in its own checkpoint
            self._load(pl_module)
        super().setup(trainer, pl_module, stage)  # BaseFinetuning: freeze_before_training
        trainable, total = parameter_counts(pl_module.net)
        log.info(f"encoder mode={self.mode}: {trainable} of {total} parameters train ({100 * trainable / total:.2f} %)")
        self.done = True

    def _load(self, pl_module: L.LightningModule) -> None:
        key = f"{KEY}.checkpoint" if self.checkpoint else f"{KEY}.experiment"
        net, _, found = load_from_source(self.source_settings, key)
        self.source = found.record
        if not self.checkpoint:
            log.info(f"encoder: run {found.record['run_id']} of experiment={self.experiment} {' '.join(self.overrides)} from {found.record['run_dir']}")
        backbone: nn.Module = pl_module.net.backbone
        state = renamed_for_lora(backbone, net.backbone.state_dict())
        own = backbone.state_dict()
        lora_keys = {k for k in own if "lora_" in k}
        check_shapes(backbone, {**state, **{k: own[k] for k in lora_keys}}, f"{KEY} (the stored encoder)")
        backbone.load_state_dict({**own, **state})

    def frozen_parameters(self, pl_module: L.LightningModule) -> list[nn.Parameter]:
        net = pl_module.net
        if self.mode == "finetune":
            return []
        if self.mode == "lora":
            if not lora_weights(net):
                raise UserError(f"{KEY}.mode=lora needs LoRA in the net: set model.net.lora.rank (e.g. 8)")
            return [p for name, p in net.backbone.named_parameters() if not ("lora_" in name or name.startswith(("proj.", "norm.", "gate.")))]
        return list(net.backbone.parameters())

    def eval_modules(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return [pl_module.net.backbone] if self.mode == "linear_probe" else []

    def state_dict(self) -> dict:
        return {**super().state_dict(), "source": dict(self.source)}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "source"})
        self.source = state_dict.get("source", {})
