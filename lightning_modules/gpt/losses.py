"""The GPT family's loss: next-token cross-entropy.

    loss = mean over target tokens of -log softmax(logits)[target]

Targets of -1 are ignored: the chat loss mask (only the assistant's tokens are trained on) and
the padding of a batch of conversations.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against targets (B, T); reduction="none" gives (B*T,) nats."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)
