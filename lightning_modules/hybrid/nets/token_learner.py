"""TokenLearner (Ryoo et al. 2021): K learned tokens as attention-weighted sums of N tokens.

    alpha = softmax_N(MLP(X))    (B, N, K): each of the K maps sums to 1 over the N positions
    Z     = alpha^T X            (B, K, C)

The softmax runs over the positions, not over the K outputs: each output token is a convex
combination of input tokens. The class (prefix) tokens are not learned from: the ViT stream keeps
them in front of the K tokens (vit_stream.py).
"""

import torch
from torch import nn


class TokenLearner(nn.Module):
    def __init__(self, dim: int, num_tokens: int = 8, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, num_tokens))
        self.num_tokens = num_tokens

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """alpha (B, N, K), summing to 1 over N."""
        return self.mlp(self.norm(x)).softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights(x).transpose(1, 2) @ x
