"""A 1-D CNN for inertial windows (B, C, T): conv blocks, global average pooling, a linear head.

Each block is Conv1d -> BatchNorm -> ReLU -> MaxPool(2), the usual small HAR CNN (e.g. Yang et
al., "Deep convolutional neural networks on multichannel time series for human activity
recognition", IJCAI 2015). Named parts for fine-tuning: features.<k> (block k), head.
"""

from collections.abc import Sequence

import torch
from torch import nn


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
