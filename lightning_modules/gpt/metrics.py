"""Bits per byte, the tokenizer-independent measure of a language model (nanochat's `evaluate_bpb`):

    bpb = sum_i nats_i / (ln 2 * sum_i bytes_i)

over the target tokens i that stand for text (special tokens have 0 bytes and are left out of
both sums), bytes_i = UTF-8 length of token i. Summed over the whole validation set (and all
ranks) before dividing, so it is exact rather than a mean of per-batch ratios.
"""

import math

import torch
from torchmetrics import Metric


class BitsPerByte(Metric):
    """Accumulates nats and bytes over target tokens; computes (mean loss in nats, bits per byte)."""

    full_state_update = False

    def __init__(self):
        super().__init__()
        for name in ("nats", "tokens", "text_nats", "text_bytes"):
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nats: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> None:
        """nats, targets: (N,) per target token; token_bytes: (vocab,) UTF-8 bytes of each id."""
        valid = targets >= 0
        nbytes = token_bytes[targets.clamp_min(0)] * valid
        text = nbytes > 0
        self.nats += nats[valid].double().sum()
        self.tokens += valid.sum()
        self.text_nats += nats[text].double().sum()
        self.text_bytes += nbytes.double().sum()

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        # 0 / 0 gives NaN on purpose: a split with no counted token has no value, not a perfect one.
        loss = self.nats / self.tokens
        bpb = self.text_nats / (math.log(2) * self.text_bytes)
        return loss.float(), bpb.float()
