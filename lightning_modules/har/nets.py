"""Nets for inertial windows (B, C, T) -> (B, num_classes) logits: a 1-D CNN and a small transformer.

HarCNN: conv blocks Conv1d -> BatchNorm -> ReLU -> MaxPool(2), global average pooling, a linear
head: the usual small HAR CNN (e.g. Yang et al., "Deep convolutional neural networks on
multichannel time series for human activity recognition", IJCAI 2015). Named parts for
fine-tuning: features.<k> (block k), head.

HarTransformer: the window is cut into non-overlapping patches of `patch_size` samples, each
projected to a token (a strided Conv1d), plus a learned position embedding; pre-norm encoder
layers (Vaswani et al., 2017; pre-norm as in Xiong et al., 2020), mean of the tokens, LayerNorm,
linear head. Named parts for fine-tuning: embed, pos, encoder.layers.<k>, norm, head.
"""

from collections.abc import Sequence

import torch
from torch import nn

from hylab.errors import UserError


def conv_block(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm1d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2),
    )


class HarCNN(nn.Module):
    def __init__(
        self,
        in_channels: int = 6,
        num_classes: int = 7,
        channels: Sequence[int] = (32, 64, 64),
        kernel_size: int = 5,
        dropout: float = 0.1,
    ):
        super().__init__()
        widths = [in_channels, *channels]
        self.features = nn.Sequential(*(conv_block(a, b, kernel_size) for a, b in zip(widths[:-1], widths[1:])))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, num_classes) logits."""
        return self.head(self.dropout(self.features(x).mean(dim=-1)))


class HarTransformer(nn.Module):
    def __init__(
        self,
        in_channels: int = 6,
        num_classes: int = 7,
        window_size: int = 100,
        patch_size: int = 10,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.1,
    ):
        super().__init__()
        if window_size % patch_size:
            raise UserError(f"model.net.patch_size={patch_size} must divide data.window_size={window_size}")
        if dim % heads:
            raise UserError(f"model.net.heads={heads} must divide model.net.dim={dim}")
        self.embed = nn.Conv1d(in_channels, dim, patch_size, stride=patch_size)
        self.pos = nn.Parameter(torch.zeros(1, window_size // patch_size, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, int(dim * mlp_ratio), dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, num_classes) logits."""
        tokens = self.embed(x).transpose(1, 2) + self.pos
        return self.head(self.norm(self.encoder(tokens).mean(dim=1)))
