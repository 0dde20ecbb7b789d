"""SpeedNet: shapes, memory layout, and the flip test-time augmentation."""

import pytest
import torch

from lightning_modules.image.nets.speednet import SpeedNet


def test_logits_shape_and_channels_last_weights():
    net = SpeedNet(in_chans=3, num_classes=7, widths=(8, 16, 32))
    assert net(torch.randn(5, 3, 32, 32)).shape == (5, 7)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 2 * 2  # the stem, then two convs per block
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)


def test_flip_tta_averages_image_and_mirror_in_eval_mode_only():
    torch.manual_seed(0)
    net = SpeedNet(widths=(8, 16), tta_flip=True).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        expected = (net.logits(x) + net.logits(x.flip(-1))) / 2
        assert torch.allclose(net(x), expected, atol=1e-6)
        assert not torch.allclose(net(x), net.logits(x), atol=1e-4)
    net.train()
    torch.manual_seed(1)
    plain = net.logits(x)
    torch.manual_seed(1)
    assert torch.allclose(net(x), plain)  # training sees the image as it is


def test_logit_scale_multiplies_the_logits():
    torch.manual_seed(0)
    one = SpeedNet(widths=(8, 16)).eval()
    two = SpeedNet(widths=(8, 16), logit_scale=2.0).eval()
    two.load_state_dict(one.state_dict())
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(two(x), 2 * one(x), atol=1e-6)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="act='tanh'"):
        SpeedNet(act="tanh")


def test_layout_bench_times_a_bf16_channels_last_step():
    from bench.speed_layout import images_per_second

    net = SpeedNet(widths=(8, 16), channels_last=True)
    assert images_per_second(net, batch=4, bf16=True, steps=1, warmup=1) > 0
