"""Distillation losses against their formulas, written out by hand here."""

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.image.losses import (
    ProjectionHead,
    TokenDistiller,
    alpha_at,
    cka_loss,
    distillation_loss,
    gram_loss,
    grid_to_tokens,
    kl_to_teacher,
    linear_cka,
    relational_loss,
    token_alignment_loss,
)


def kl_by_hand(student_logits, teacher_logits, tau):
    """sum over the batch and classes of p_t (log p_t - log p_s), tempered."""
    total = 0.0
    for s_row, t_row in zip(student_logits.tolist(), teacher_logits.tolist()):
        z_s = [v / tau for v in s_row]
        z_t = [v / tau for v in t_row]
        log_norm_s = math.log(sum(math.exp(v) for v in z_s))
        log_norm_t = math.log(sum(math.exp(v) for v in z_t))
        for a, b in zip(z_s, z_t):
            p_t = math.exp(b - log_norm_t)
            total += p_t * ((b - log_norm_t) - (a - log_norm_s))
    return total


@pytest.fixture
def logits():
    torch.manual_seed(0)
    return torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10) * 3, torch.tensor([1, 0, 3, 9])


def test_hard_distillation_formula(logits):
    cls_logits, dist_logits, teacher, y = logits
    alpha, eps = 0.3, 0.1
    terms = distillation_loss(cls_logits, dist_logits, y, teacher, "hard", alpha, label_smoothing=eps)
    teacher_labels = teacher.argmax(dim=-1)
    expected_dist = -F.log_softmax(dist_logits, dim=-1)[torch.arange(4), teacher_labels].mean()
    log_p = F.log_softmax(cls_logits, dim=-1)
    smoothed_ce = ((1 - eps) * -log_p[torch.arange(4), y] + eps * -log_p.mean(dim=-1)).mean()
    torch.testing.assert_close(terms["cls"], (1 - alpha) * smoothed_ce)
    torch.testing.assert_close(terms["dist"], alpha * expected_dist)


def test_soft_distillation_formula_and_kl_reductions(logits):
    cls_logits, dist_logits, teacher, y = logits
    tau, alpha = 3.0, 0.5
    by_hand = kl_by_hand(dist_logits, teacher, tau)
    batch, classes = dist_logits.shape
    assert kl_to_teacher(dist_logits, teacher, tau, "batchmean").item() == pytest.approx(by_hand / batch, rel=1e-5)
    assert kl_to_teacher(dist_logits, teacher, tau, "element_mean").item() == pytest.approx(by_hand / (batch * classes), rel=1e-5)
    terms = distillation_loss(cls_logits, dist_logits, y, teacher, "soft", alpha, tau=tau, reduction="batchmean")
    assert terms["dist"].item() == pytest.approx(alpha * tau**2 * by_hand / batch, rel=1e-5)
    assert terms["cls"].item() == pytest.approx((1 - alpha) * F.cross_entropy(cls_logits, y).item(), rel=1e-6)
    # DeiT's per-element mean is num_classes times weaker than the per-sample KL we use
    deit = distillation_loss(cls_logits, dist_logits, y, teacher, "soft", alpha, tau=tau, reduction="element_mean")
    assert terms["dist"].item() == pytest.approx(classes * deit["dist"].item(), rel=1e-5)
    assert kl_to_teacher(teacher, teacher, tau).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        kl_to_teacher(dist_logits, teacher, tau, "mean")


def test_soft_targets_from_mixing_are_accepted(logits):
    cls_logits, dist_logits, teacher, y = logits
    soft = 0.7 * F.one_hot(y, 10).float() + 0.3 * F.one_hot(y.flip(0), 10).float()
    terms = distillation_loss(cls_logits, dist_logits, soft, teacher, "hard", 0.5)
    expected = -(soft * F.log_softmax(cls_logits, dim=-1)).sum(dim=-1).mean()
    torch.testing.assert_close(terms["cls"], 0.5 * expected)


@pytest.mark.parametrize(
    "schedule,expected",
    [("constant", [0.5, 0.5, 0.5]), ("linear", [0.1, 0.3, 0.5]), ("cosine", [0.1, 0.3, 0.5])],
)
def test_alpha_schedules(schedule, expected):
    values = [alpha_at(p, schedule, alpha=0.5, alpha_start=0.1) for p in (0.0, 0.5, 1.0)]
    assert values == pytest.approx(expected)
    if schedule == "cosine":  # 0.5 + (0.1 - 0.5) * (1 + cos(pi / 4)) / 2 at a quarter
        assert alpha_at(0.25, schedule, 0.5, 0.1) == pytest.approx(0.5 - 0.4 * (1 + math.cos(math.pi / 4)) / 2)
    assert alpha_at(1.7, schedule, 0.5, 0.1) == pytest.approx(expected[-1])  # clamped past the end
    with pytest.raises(ValueError, match="schedule"):
        alpha_at(0.5, "step", 0.5, 0.1)


def test_teacher_grid_is_resized_bilinearly_to_the_student_grid():
    grid = torch.randn(2, 5, 14, 14)
    tokens = grid_to_tokens(grid, size=(7, 7))
    assert tokens.shape == (2, 49, 5)  # 196 -> 49 tokens
    expected = F.interpolate(grid, size=(7, 7), mode="bilinear", align_corners=False)
    torch.testing.assert_close(tokens, expected.flatten(2).transpose(1, 2))
    torch.testing.assert_close(grid_to_tokens(torch.ones(1, 3, 14, 14), (8, 8)), torch.ones(1, 64, 3))
    torch.testing.assert_close(grid_to_tokens(grid), grid.flatten(2).transpose(1, 2))


def test_token_alignment_is_one_minus_cosine_averaged_over_layers():
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (B=1, N=2, D=2)
    same, opposite = a.clone(), -a
    orthogonal = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert token_alignment_loss([a], [same]).item() == pytest.approx(0.0)
    assert token_alignment_loss([a], [opposite]).item() == pytest.approx(2.0)
    assert token_alignment_loss([a, a], [same, orthogonal]).item() == pytest.approx((0.0 + 1.0) / 2)
    assert token_alignment_loss([a], [3 * a]).item() == pytest.approx(0.0)  # scale-free


def test_relational_loss_compares_batch_similarity_structure():
    torch.manual_seed(0)
    x = torch.randn(6, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    assert relational_loss(x, 2 * x @ rotation).item() == pytest.approx(0.0, abs=1e-6)  # same cosine structure
    y = torch.randn(6, 3)
    tau = 0.5
    off = ~torch.eye(6, dtype=torch.bool)
    c_s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T
    c_t = F.normalize(y, dim=-1) @ F.normalize(y, dim=-1).T
    p_s = F.softmax(c_s[off].view(6, 5) / tau, dim=-1)
    p_t = F.softmax(c_t[off].view(6, 5) / tau, dim=-1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(dim=-1).mean()
    torch.testing.assert_close(relational_loss(x, y, tau), expected)
    assert relational_loss(x[:1], y[:1]).item() == 0.0


def test_cka_and_gram_losses():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8))
    assert linear_cka(x, 5 * x @ rotation).item() == pytest.approx(1.0, abs=1e-5)
    assert cka_loss(x, x @ rotation).item() == pytest.approx(0.0, abs=1e-5)
    assert 0.0 < cka_loss(x, torch.randn(16, 4)).item() <= 1.0
    assert gram_loss(x, 3 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert gram_loss(x, torch.randn(16, 8)).item() > 0


def test_projection_head_layers():
    head = ProjectionHead(96, 256)
    assert [type(m).__name__ for m in head] == ["Linear", "LayerNorm", "GELU", "Linear", "LayerNorm"]
    assert head(torch.randn(2, 49, 96)).shape == (2, 49, 256)


def test_token_distiller_stages_and_gradients():
    torch.manual_seed(0)
    distiller = TokenDistiller(student_dim=12, teacher_dims=[6, 10], proj_dim=16, lambda_tok=1.0, lambda_rel=0.1, rel_warmup_epochs=2, lambda_cka=0.5, lambda_gram=0.2)
    student = [torch.randn(4, 12, 7, 7, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(4, 6, 14, 14), torch.randn(4, 10, 7, 7)]
    stage1, diagnostics = distiller(student, teacher, epoch=1)
    assert set(stage1) == {"tok", "cka", "gram"} and diagnostics["tok_proj_std"] > 0
    stage2, _ = distiller(student, teacher, epoch=2)
    assert set(stage2) == {"tok", "rel", "cka", "gram"}
    torch.testing.assert_close(stage2["tok"], stage1["tok"])
    sum(stage2.values()).backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(p.grad is not None for p in distiller.parameters())  # both projection heads are trained
    with pytest.raises(ValueError):
        distiller(student[:1], teacher, epoch=0)  # layers must pair up
