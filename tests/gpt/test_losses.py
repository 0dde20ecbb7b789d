"""Next-token cross-entropy: a hand-computed value and the ignored targets of the chat mask."""

import math

import pytest
import torch

from lightning_modules.gpt.losses import next_token_loss


def test_uniform_logits_cost_log_vocab_per_token():
    logits = torch.zeros(2, 3, 5)
    targets = torch.tensor([[0, 1, 2], [3, 4, 0]])
    assert next_token_loss(logits, targets).item() == pytest.approx(math.log(5))
    assert next_token_loss(logits, targets, reduction="none").shape == (6,)


def test_ignored_targets_do_not_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 16, 64)
    y = torch.randint(0, 64, (2, 16))
    masked = y.clone()
    masked[:, :8] = -1
    per_token = next_token_loss(logits, y, reduction="none").view(2, 16)
    assert next_token_loss(logits, masked).item() == pytest.approx(per_token[:, 8:].mean().item(), rel=1e-5)
    assert (next_token_loss(logits, masked, reduction="none").view(2, 16)[:, :8] == 0).all()
