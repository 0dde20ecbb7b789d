import pytest
import torch

from lightning_modules.image.nets.seresnet import SEResidualBlock, SqueezeExcite, seresnet_cifar, seresnet_mnist


def test_squeeze_excite_matches_formula():
    torch.manual_seed(0)
    se = SqueezeExcite(32, reduction=16)
    x = torch.randn(3, 32, 5, 5)
    w1, w2 = se.fc1.weight, se.fc2.weight  # (2, 32), (32, 2)
    assert w1.shape == (2, 32) and w2.shape == (32, 2)
    gap = x.mean(dim=(2, 3))
    expected = x * torch.sigmoid(torch.relu(gap @ w1.T) @ w2.T)[:, :, None, None]
    torch.testing.assert_close(se(x), expected)


def test_residual_block_order_and_shortcut():
    block = SEResidualBlock(32, 64, stride=2).eval()
    x = torch.randn(2, 32, 8, 8)
    out = block(x)
    assert out.shape == (2, 64, 4, 4)
    # Conv -> BN -> ReLU -> Conv -> BN -> SE -> (+ shortcut) -> ReLU, computed by hand:
    h = torch.relu(block.bn1(block.conv1(x)))
    h = block.se(block.bn2(block.conv2(h)))
    torch.testing.assert_close(out, torch.relu(h + block.shortcut(x)))
    assert (out >= 0).all()
    assert isinstance(SEResidualBlock(16, 16).shortcut, torch.nn.Identity)


@pytest.mark.parametrize(
    ("factory", "blocks", "widths", "in_chans", "size"),
    [
        (seresnet_mnist, 6, [32, 32, 64, 64, 128, 128], 1, 28),
        (seresnet_mnist, 6, [32, 32, 64, 64, 128, 128], 1, 8),
        (seresnet_cifar, 11, [64] * 2 + [128] * 3 + [256] * 4 + [512] * 2, 3, 32),
    ],
)
def test_seresnet_architectures(factory, blocks, widths, in_chans, size):
    net = factory(in_chans=in_chans, num_classes=7)
    assert len(net.blocks) == blocks
    assert [b.conv2.out_channels for b in net.blocks] == widths
    assert all(b.se.fc1.out_features == max(1, b.conv2.out_channels // 16) for b in net.blocks)
    assert net(torch.randn(2, in_chans, size, size)).shape == (2, 7)


def test_timm_backbone_by_name_and_unknown_name():
    from hylab.errors import UserError
    from lightning_modules.image.nets.timm_backbone import timm_classifier

    net = timm_classifier("resnet18", in_chans=1, num_classes=10)
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(UserError, match="not a timm model"):
        timm_classifier("resnet_does_not_exist", in_chans=1, num_classes=10)
