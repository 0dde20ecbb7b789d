"""A dense net on flattened images: Linear -> BatchNorm1d -> ReLU per hidden layer, then a linear
head. At widths (64, 128, 64) on 28x28 inputs it is lightning-hydra-template's SimpleDenseNet
(784-64-128-64-10): a net so small that a training step costs a few milliseconds on a CPU, which
makes it the yardstick of a framework's own cost per step (bench/overhead_steps.py).
"""

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_chans: int = 1, image_size: int = 28, num_classes: int = 10, widths: Sequence[int] = (64, 128, 64)):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        previous = in_chans * image_size * image_size
        for width in widths:
            layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(previous, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
