"""Tiny streams for the hybrid family's unit tests (28x28, one channel)."""

import pytest
import torch

CNN = dict(name="convnextv2_atto", drop_path_rate=0.0, kwargs=dict(patch_size=1, depths=[1, 1, 1, 1], dims=[8, 16, 16, 32]))
VIT = dict(name="vit_tiny_patch16_224", drop_path_rate=0.0, kwargs=dict(img_size=28, patch_size=7, embed_dim=32, depth=2, num_heads=2))


def tiny(**overrides):
    from lightning_modules.hybrid.nets.backbone import hybrid_net

    return hybrid_net(**{"num_classes": 10, "in_chans": 1, "fusion_dim": 16, "cnn": CNN, "vit": VIT, **overrides})


def tiny_vit(**kwargs):
    import timm

    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, in_chans=1,
                             **{**VIT["kwargs"], "img_size": 28, "patch_size": 4, **kwargs})


@pytest.fixture
def images():
    torch.manual_seed(0)
    return torch.randn(4, 1, 28, 28)
