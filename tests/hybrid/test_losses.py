"""AdaFace, EDL and SupCon against their formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.hybrid import losses


# -- AdaFace -----------------------------------------------------------------------------------
def cosines():
    torch.manual_seed(0)
    return torch.rand(5, 4) * 1.6 - 0.8, torch.tensor([0, 1, 2, 3, 1])


def target_logit(logits, labels):
    return logits.gather(1, labels[:, None]).squeeze(1)


def test_adaface_low_quality_is_arcface_and_medium_quality_is_cosface():
    cos, y = cosines()
    loss = losses.AdaFaceLoss(margin=0.4, scale=64.0)
    theta = cos.acos()
    arc = loss.margin_logits(cos, y, torch.full((5,), -1.0))
    torch.testing.assert_close(target_logit(arc, y), 64 * torch.cos(target_logit(theta, y) + 0.4))
    cosface = loss.margin_logits(cos, y, torch.zeros(5))
    torch.testing.assert_close(target_logit(cosface, y), 64 * (target_logit(cos, y) - 0.4))
    high = loss.margin_logits(cos, y, torch.ones(5))
    torch.testing.assert_close(target_logit(high, y), 64 * (torch.cos(target_logit(theta, y) - 0.4) - 0.8))
    others = ~F.one_hot(y, 4).bool()
    torch.testing.assert_close(arc[others], 64 * cos[others])  # non-target logits carry no margin


def test_adaface_h0_reduces_to_cosface_and_the_norm_statistics_are_emas():
    loss = losses.AdaFaceLoss(margin=0.4, h=0.0, momentum=0.1)
    norms = torch.tensor([10.0, 30.0, 50.0])
    assert torch.equal(loss.quality(norms), torch.zeros(3))
    loss.train()
    cos, y = cosines()
    loss(cos[:3], norms, y[:3])
    assert loss.norm_mean.item() == pytest.approx(0.9 * 20 + 0.1 * 30)
    assert loss.norm_std.item() == pytest.approx(0.9 * 100 + 0.1 * 20)
    kept = loss.norm_mean.clone()
    loss(cos[:3], norms, y[:3], update=False)  # SAM's second pass: statistics left alone
    assert torch.equal(loss.norm_mean, kept)


def test_adaface_quality_is_the_clipped_standardized_norm():
    loss = losses.AdaFaceLoss(h=0.333)
    z = loss.quality(torch.tensor([20.0, 120.0, 1000.0, -1000.0]))
    torch.testing.assert_close(z, torch.tensor([0.0, 0.333 * 100 / (100 + 1e-3), 1.0, -1.0]))


# -- EDL ---------------------------------------------------------------------------------------
def test_zero_logits_give_full_uncertainty():
    for kind in ("relu", "exp"):
        alpha, p, u = losses.dirichlet(torch.zeros(3, 10), kind)
        if kind == "relu":
            torch.testing.assert_close(u, torch.ones(3))
        torch.testing.assert_close(p, torch.full((3, 10), 0.1))


def test_dirichlet_kl_matches_torch_distributions():
    alpha = torch.rand(4, 5) * 3 + 0.5
    expected = torch.distributions.kl_divergence(torch.distributions.Dirichlet(alpha), torch.distributions.Dirichlet(torch.ones(5)))
    torch.testing.assert_close(losses.kl_to_uniform_dirichlet(alpha), expected)


def test_edl_losses_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    y = torch.tensor([0])
    alpha = torch.tensor([3.0, 1.0, 1.0])
    s = 5.0
    p = alpha / s
    onehot = torch.tensor([1.0, 0.0, 0.0])
    mse = ((onehot - p) ** 2 + p * (1 - p) / (s + 1)).sum()
    assert losses.edl_loss(logits, y, epoch=0, variant="mse").item() == pytest.approx(mse.item(), rel=1e-6)
    assert losses.edl_loss(logits, y, epoch=0, variant="log").item() == pytest.approx(math.log(5) - math.log(3), rel=1e-6)
    digamma = torch.digamma(torch.tensor(5.0)) - torch.digamma(torch.tensor(3.0))
    assert losses.edl_loss(logits, y, epoch=0, variant="digamma").item() == pytest.approx(digamma.item(), rel=1e-6)
    # KL on alpha~ = y + (1 - y) alpha = [1, 1, 1] is 0 here: only misleading evidence is penalized
    assert losses.edl_loss(logits, y, epoch=10, variant="mse").item() == pytest.approx(mse.item(), rel=1e-6)


def test_edl_kl_is_annealed():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    y = torch.tensor([0])
    base = losses.edl_loss(logits, y, epoch=0, annealing_epochs=10)
    kl = losses.kl_to_uniform_dirichlet(torch.tensor([[1.0, 4.0, 2.0]])).item()
    for epoch, weight in ((5, 0.5), (10, 1.0), (30, 1.0)):
        assert losses.edl_loss(logits, y, epoch=epoch, annealing_epochs=10).item() == pytest.approx(base.item() + weight * kl, rel=1e-5)


# -- SupCon ------------------------------------------------------------------------------------
def test_supcon_by_hand():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(4, 3), dim=-1)
    labels = torch.tensor([0, 1, 0, 1])
    tau = 0.1
    total = 0.0
    for i in range(4):
        others = [a for a in range(4) if a != i]
        denominator = torch.logsumexp(torch.stack([z[i] @ z[a] / tau for a in others]), 0)
        positives = [p for p in others if labels[p] == labels[i]]
        total += -sum((z[i] @ z[p] / tau - denominator) for p in positives) / len(positives)
    assert losses.supcon_loss(z * 3.0, labels, tau).item() == pytest.approx((total / 4).item(), rel=1e-5)  # input scale is irrelevant


def test_supcon_with_unique_labels_is_nt_xent_and_no_positive_gives_no_nan():
    torch.manual_seed(0)
    z = torch.randn(6, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])  # views of 3 images: each anchor's only positive is its twin
    zn = F.normalize(z, dim=-1)
    sim = (zn @ zn.T / 0.5).masked_fill(torch.eye(6, dtype=torch.bool), -torch.inf)
    twin = torch.tensor([3, 4, 5, 0, 1, 2])
    nt_xent = F.cross_entropy(sim, twin)
    assert losses.supcon_loss(z, labels, 0.5).item() == pytest.approx(nt_xent.item(), rel=1e-5)
    lonely = losses.supcon_loss(z[:3], labels[:3], 0.1)
    assert lonely.item() == 0.0 and not torch.isnan(lonely)
    partly = losses.supcon_loss(z[:4], labels[:4], 0.1)  # anchors 1 and 2 have no positive: left out
    assert torch.isfinite(partly)


def test_distillation_term_is_t2_times_kl():
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    kl = (F.softmax(t / 2, -1) * (F.log_softmax(t / 2, -1) - F.log_softmax(s / 2, -1))).sum(-1).mean()
    assert losses.distillation_term(s, t, 2.0).item() == pytest.approx(4 * kl.item(), rel=1e-5)


def test_module_mixes_the_teacher_term_in_with_weight_w():
    from functools import partial

    from lightning_modules.hybrid.module import HybridClassifier
    from lightning_modules.image.module import TeacherOutputs
    from tests.hybrid.conftest import tiny

    torch.manual_seed(0)
    module = HybridClassifier(tiny(mode="vit"), partial(torch.optim.AdamW), label_smoothing=0.0,
                              distillation={"weight": 0.3, "temperature": 2.0}).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    teacher = torch.randn(4, 10)
    assert module.needs_teacher and module.teacher_token_layers() is None
    module.receive_teacher_outputs(TeacherOutputs(teacher))
    with torch.no_grad():
        loss, logits, _ = module.task_loss((x, y))
        expected = 0.7 * F.cross_entropy(logits, y) + 0.3 * losses.distillation_term(logits, teacher, 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
