"""A small, well-shaped CNN for fast training on 28x28 / 32x32 images.

The shape follows the speed-run nets for CIFAR-10 (Page's ResNet-9 and Jordan's airbench): a
stem conv, then one block per resolution, each block Conv -> MaxPool(2) -> BN -> act -> Conv ->
BN -> act (pooling before the normalization halves its cost), global max pooling and a linear
head without bias whose logits are scaled by `logit_scale`. No residuals: at three blocks they
cost more than they bring (airbench drops them too).

Speed on a CPU comes from the memory layout and the dtype, not from the net: weights and inputs
in channels_last let oneDNN run its blocked convolution kernels, and bf16 autocast
(`trainer.precision=bf16-mixed`) uses the AMX / AVX-512-BF16 units of recent x86 CPUs.

`tta_flip`: in eval mode the logits are the mean over the image and its horizontal mirror
(test-time augmentation; only for data whose classes are mirror-symmetric, like Fashion-MNIST).
"""

from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def conv_bn_act(in_chans: int, out_chans: int, act: type[nn.Module], pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(in_chans, out_chans, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return [*layers, nn.BatchNorm2d(out_chans), act()]


class SpeedNet(nn.Module):
    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (24, 32, 64, 128),
        act: str = "gelu",
        logit_scale: float = 1.0,
        tta_flip: bool = False,
        channels_last: bool = True,
    ):
        super().__init__()
        if act not in ACTIVATIONS:
            raise ValueError(f"act={act!r}: choose one of {sorted(ACTIVATIONS)}")
        activation = ACTIVATIONS[act]
        stem, *stages = widths
        layers = conv_bn_act(in_chans, stem, activation, pool=False)
        previous = stem
        for width in stages:
            layers += conv_bn_act(previous, width, activation, pool=True) + conv_bn_act(width, width, activation, pool=False)
            previous = width
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(previous, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.tta_flip = tta_flip
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.head(self.features(x)) * self.logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tta_flip and not self.training:
            return (self.logits(x) + self.logits(x.flip(-1))) / 2
        return self.logits(x)
