"""SE-ResNets: residual CNNs with squeeze-and-excitation channel attention.

Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018. One residual block is
Conv -> BN -> ReLU -> Conv -> BN -> SE -> (+ shortcut) -> ReLU.
"""

from collections.abc import Sequence

import torch
from torch import nn


class SqueezeExcite(nn.Module):
    """SE(x) = x * sigmoid(W2 . ReLU(W1 . GAP(x))), W1: C -> C/r, W2: C/r -> C, no biases."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gate[:, :, None, None]


class SEResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, se_reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.se = SqueezeExcite(out_channels, se_reduction)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return torch.relu(out + self.shortcut(x))


class SEResNet(nn.Module):
    """A 3x3 stem, then stages of SE residual blocks (each stage after the first halves the
    resolution), global average pooling and a linear classifier."""

    def __init__(
        self,
        blocks_per_stage: Sequence[int],
        channels: Sequence[int],
        in_chans: int = 1,
        num_classes: int = 10,
        se_reduction: int = 16,
    ):
        super().__init__()
        if len(blocks_per_stage) != len(channels):
            raise ValueError("blocks_per_stage and channels need one entry per stage")
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        blocks, width = [], channels[0]
        for stage, (depth, out_width) in enumerate(zip(blocks_per_stage, channels)):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(SEResidualBlock(width, out_width, stride, se_reduction))
                width = out_width
        self.blocks = nn.Sequential(*blocks)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C, H', W') before pooling."""
        return self.blocks(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x).mean(dim=(2, 3)))


def seresnet_mnist(in_chans: int = 1, num_classes: int = 10, se_reduction: int = 16) -> SEResNet:
    """6 blocks in 3 stages of 2: 32 -> 64 -> 128 channels (28x28 -> 14x14 -> 7x7)."""
    return SEResNet((2, 2, 2), (32, 64, 128), in_chans, num_classes, se_reduction)


def seresnet_cifar(in_chans: int = 1, num_classes: int = 10, se_reduction: int = 16) -> SEResNet:
    """11 blocks in 4 stages of 2, 3, 4, 2: 64 -> 128 -> 256 -> 512 channels (32 -> 16 -> 8 -> 4)."""
    return SEResNet((2, 3, 4, 2), (64, 128, 256, 512), in_chans, num_classes, se_reduction)
