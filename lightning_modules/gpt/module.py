"""GPTLanguageModel: a GPT trained on next-token cross-entropy (losses.py), evaluated in bits per
byte (metrics.py), optimized by Muon + AdamW (optim.py)."""

from functools import partial

import lightning as L
import torch

from hylab.errors import UserError
from lightning_modules.best_so_far import BestSoFar
from lightning_modules.gpt.checkpoint import CHECKPOINT_KEY, checkpoint_entry, load_weights, read_gpt_checkpoint, resolve_init_from
from lightning_modules.gpt.losses import next_token_loss
from lightning_modules.gpt.metrics import BitsPerByte
from lightning_modules.gpt.nets import GPT
from lightning_modules.gpt.optim import build_gpt_optimizer
from lightning_modules.optim import with_schedule


class GPTLanguageModel(L.LightningModule):
    def __init__(
        self,
        net: GPT | None,
        matrix_optimizer: partial,
        embedding_optimizer: partial,
        head_lr: float = 0.008,  # conf/model/gpt.yaml's value, which every GPT run so far trained with
        scheduler: partial | None = None,
        compile: bool = False,
        init_from: str | None = None,
        base: dict | None = None,
        depth: int | None = None,
        reference_width: int = 128,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "matrix_optimizer", "embedding_optimizer", "scheduler"], logger=False)
        self.net = self._net(net, resolve_init_from(init_from, base))
        self.matrix_optimizer, self.embedding_optimizer = matrix_optimizer, embedding_optimizer
        self.scheduler_factory = scheduler or None
        self.val_bpb = BitsPerByte()
        self.test_bpb = BitsPerByte()
        self.best = BestSoFar({"val/bpb": "min"}).add_to(self)
        self.register_buffer("token_bytes", torch.zeros(0, dtype=torch.int32), persistent=False)
        self.tokenizer_json: str | None = None
        self.batch_tokens = 0
        if compile:
            self.net.compile()

    @staticmethod
    def _net(net: GPT | None, init_from: str | None) -> GPT:
        """The net of the config, or of the checkpoint `init_from` (with its weights)."""
        if not init_from:
            if net is None:
                raise UserError("model.net is null and model.init_from is not set: give one of them")
            return net
        checkpoint = read_gpt_checkpoint(init_from, key="model.init_from")
        if net is None:
            net = GPT(checkpoint.config)
        elif net.config != checkpoint.config:
            differ = {k: (v, getattr(checkpoint.config, k)) for k, v in net.config.to_dict().items() if getattr(checkpoint.config, k) != v}
            raise UserError(f"model.net differs from the checkpoint model.init_from={init_from} in {differ} (config, checkpoint)")
        return load_weights(net, checkpoint, key="model.init_from")

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        tokenizer = datamodule.tokenizer
        if tokenizer.vocab_size > self.net.config.vocab_size:
            raise UserError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but model.net.config.vocab_size="
                f"{self.net.config.vocab_size}: make them equal (data.vocab_size)"
            )
        if self.hparams.init_from or self.hparams.base:
            if datamodule.hparams.sequence_len > self.net.config.sequence_len:  # a fine-tune on longer sequences
                self.net.extend_context(datamodule.hparams.sequence_len)
        if datamodule.hparams.sequence_len > self.net.config.max_positions:
            raise UserError(
                f"data.sequence_len={datamodule.hparams.sequence_len} exceeds the net's "
                f"{self.net.config.max_positions} positions (model.net.config.max_positions)"
            )
        self.token_bytes = datamodule.token_bytes.to(self.device)
        self.tokenizer_json = tokenizer.to_str()

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            from datamodules.gpt.tokenizer import GPTTokenizer

            GPTTokenizer.from_str(self.tokenizer_json).save(f"{self.trainer.default_root_dir}/tokenizer.json")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    @property
    def flops_per_batch(self) -> int:
        """For ThroughputMonitor (tokens/s, MFU): forward + backward in training, forward alone
        (a third of it) in evaluation."""
        flops = self.net.flops_per_token() * self.batch_tokens
        return flops if self.training else flops // 3

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        self.batch_tokens = inputs.numel()
        # A compiled net compiles `forward` only: it takes the logits path (and fuses it itself).
        loss = next_token_loss(self(inputs), targets) if self.hparams.compile else self.net.loss(inputs, targets)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        self.best.on_train_start(self)

    def _evaluate(self, batch, metric: BitsPerByte) -> None:
        inputs, targets = batch
        self.batch_tokens = inputs.numel()
        nats = next_token_loss(self(inputs), targets, reduction="none")
        metric.update(nats, targets.flatten(), self.token_bytes)

    def _log_totals(self, metric: BitsPerByte, stage: str) -> torch.Tensor:
        loss, bpb = metric.compute()
        metric.reset()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/bpb", bpb, prog_bar=True)
        return bpb

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_bpb)

    def on_validation_epoch_end(self) -> None:
        self.best.update_and_log(self, {"val/bpb": self._log_totals(self.val_bpb, "val")})

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_bpb)

    def on_test_epoch_end(self) -> None:
        self._log_totals(self.test_bpb, "test")

    def adamw_lr_scale(self) -> float:
        """With the depth dial, the AdamW lrs (embedding, head) scale as (n_embd / reference_width)^-1/2
        (nanochat's 1/sqrt(d_model) rule); Muon's lr is width-independent and stays."""
        if not self.hparams.depth:
            return 1.0
        return (self.net.config.n_embd / self.hparams.reference_width) ** -0.5

    def configure_optimizers(self):
        scale = self.adamw_lr_scale()
        embedding = self.embedding_optimizer
        if scale != 1.0:
            embedding = partial(embedding.func, *embedding.args, **{**embedding.keywords, "lr": embedding.keywords["lr"] * scale})
        optimizer = build_gpt_optimizer(self.net, self.matrix_optimizer, embedding, self.hparams.head_lr * scale)
        return with_schedule(self, optimizer, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_entry(self.net, self.tokenizer_json)
