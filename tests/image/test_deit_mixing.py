"""MixUp / CutMix in the datamodule's batch transform, and label smoothing on the soft targets."""

import pytest
import torch
import torch.nn.functional as F

from datamodules.image.mixing import MixingImageDataModule, build_mixer, mix_batch
from hylab.errors import UserError

LABELS = torch.tensor([0, 1, 2, 3, 4, 5])  # pairs (i, 5 - i) have different labels


def test_mixup_is_a_convex_combination_with_the_reversed_batch():
    torch.manual_seed(0)
    mixer = build_mixer({"mixup_alpha": 0.8}, num_classes=10)
    x = torch.randn(6, 1, 8, 8)
    mixed, target = mix_batch(mixer, x, LABELS)
    lam = target[0, 0].item()  # weight of sample 0's own label
    assert 0.0 < lam < 1.0
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.flip(0))
    expected = lam * F.one_hot(LABELS, 10).float() + (1 - lam) * F.one_hot(LABELS.flip(0), 10).float()
    torch.testing.assert_close(target, expected)


def test_mixup_lambda_follows_beta_alpha_alpha():
    torch.manual_seed(0)
    alpha = 0.8
    mixer = build_mixer({"mixup_alpha": alpha}, num_classes=2)
    lams = torch.tensor([mix_batch(mixer, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]))[1][0, 0].item() for _ in range(3000)])
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)); lam and 1 - lam are interchangeable
    assert lams.mean().item() == pytest.approx(0.5, abs=0.02)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.1)


def test_cutmix_pastes_a_box_and_lambda_is_one_minus_its_area():
    torch.manual_seed(3)
    mixer = build_mixer({"cutmix_alpha": 1.0}, num_classes=10)
    x = torch.randn(6, 1, 16, 16)
    for _ in range(5):
        mixed, target = mix_batch(mixer, x, LABELS)
        from_other = (mixed != x).all(dim=1)  # pixels that came from the reversed batch
        torch.testing.assert_close(mixed[from_other[:, None]], x.flip(0)[from_other[:, None]])
        area = from_other[0].sum().item()
        lam = target[0, 0].item()
        assert lam == pytest.approx(1 - area / (16 * 16))  # lam = 1 - area_cut / area
        rows, cols = from_other[0].nonzero(as_tuple=True)
        if area:
            assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # one rectangle


def test_cutmix_box_side_is_sqrt_one_minus_lambda():
    from timm.data.mixup import rand_bbox

    torch.manual_seed(0)
    lam, size = 0.64, 20
    y1, y2, x1, x2 = rand_bbox((1, 1, size, size), lam, margin=0.0)
    cut = int(size * (1 - lam) ** 0.5)  # cut_rat = sqrt(1 - lam) = 0.6 -> 12 pixels, before clipping
    assert y2 - y1 <= cut and x2 - x1 <= cut


def test_odd_batches_leave_the_last_image_unmixed():
    torch.manual_seed(0)
    mixer = build_mixer({"mixup_alpha": 0.8, "cutmix_alpha": 1.0}, num_classes=10)
    x = torch.randn(5, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4])
    mixed, target = mix_batch(mixer, x, labels)
    assert mixed.shape == x.shape and target.shape == (5, 10)
    torch.testing.assert_close(mixed[4], x[4])
    torch.testing.assert_close(target[4], F.one_hot(torch.tensor(4), 10).float())
    torch.testing.assert_close(target.sum(dim=-1), torch.ones(5))


def test_only_training_batches_are_mixed():
    data = MixingImageDataModule(source="digits", mixing={"mixup_alpha": 0.8})
    data.setup()
    images, labels = data.datasets["train"].images[:8], data.datasets["train"].labels[:8]
    train_x, train_y = data.transform_batch(images, labels, train=True)
    eval_x, eval_y = data.transform_batch(images, labels, train=False)
    assert train_y.shape == (8, 10) and eval_y.shape == (8,)
    torch.testing.assert_close(eval_y, labels)
    assert MixingImageDataModule(source="digits").mixer is None  # both alphas 0: no mixing
    with pytest.raises(UserError, match=r"data.mixing.mixup is not a setting of data.mixing; allowed: mixup_alpha"):
        MixingImageDataModule(source="digits", mixing={"mixup": 0.8})
    assert isinstance(data.hparams.mixing, dict)  # plain values: checkpoints load with weights_only=True


def test_label_smoothing_on_soft_targets():
    torch.manual_seed(0)
    logits = torch.randn(4, 10)
    soft = 0.6 * F.one_hot(torch.tensor([1, 2, 3, 4]), 10).float() + 0.4 * F.one_hot(torch.tensor([5, 6, 7, 8]), 10).float()
    eps = 0.1
    smoothed = (1 - eps) * soft + eps / 10
    expected = -(smoothed * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
    torch.testing.assert_close(F.cross_entropy(logits, soft, label_smoothing=eps), expected)
