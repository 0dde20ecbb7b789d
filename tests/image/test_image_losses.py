"""The image family's label-smoothed cross-entropy (moved out of the framework's optim tests)."""

import torch
import torch.nn.functional as F

from lightning_modules.classifier import smoothed_cross_entropy


def test_smoothed_cross_entropy_hard_and_soft_targets_match_formula():
    torch.manual_seed(0)
    logits, eps, k = torch.randn(5, 4), 0.1, 4
    labels = torch.tensor([0, 3, 1, 2, 3])
    log_p = logits.log_softmax(-1)
    ce = -log_p[torch.arange(5), labels]
    expected = ((1 - eps) * ce + eps * (-log_p).mean(-1)).mean()
    torch.testing.assert_close(smoothed_cross_entropy(logits, labels, eps), expected)
    soft = torch.softmax(torch.randn(5, k), -1)
    ce_soft = -(soft * log_p).sum(-1)
    expected_soft = ((1 - eps) * ce_soft + eps * (-log_p).mean(-1)).mean()
    torch.testing.assert_close(smoothed_cross_entropy(logits, soft, eps), expected_soft)
    torch.testing.assert_close(smoothed_cross_entropy(logits, F.one_hot(labels, k).float(), eps), expected)
