"""MLP: lightning-hydra-template's SimpleDenseNet shape at its defaults."""

import torch

from lightning_modules.image.nets.mlp import MLP


def test_default_widths_are_the_dense_net_784_64_128_64_10():
    net = MLP()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 64), (64, 128), (128, 64), (64, 10)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 3
    assert net(torch.randn(5, 1, 28, 28)).shape == (5, 10)


def test_images_of_any_size_and_channels_are_flattened():
    assert MLP(in_chans=3, image_size=8, num_classes=7, widths=(16,))(torch.randn(2, 3, 8, 8)).shape == (2, 7)
