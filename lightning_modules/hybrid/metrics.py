"""Evaluation of representations and uncertainty.

- misclassification AUROC: how well an uncertainty score ranks the wrong test predictions above
  the right ones (EDL: u = K / S; cross-entropy baseline: 1 - max softmax, Hendrycks & Gimpel 2017);
- OOD AUROC: the same score separating out-of-distribution images (positives) from test images;
- kNN accuracy of L2-normalized embeddings (cosine similarity, majority vote of the k nearest
  training embeddings).
"""

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc


def max_softmax_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    return 1.0 - logits.softmax(dim=-1).amax(dim=-1)


def auroc(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Area under the ROC curve of `scores` for the binary `positives` (0.5 = chance)."""
    return float(binary_auroc(scores.float(), positives.long()))


def misclassification_auroc(scores: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor) -> float:
    return auroc(scores, predictions != labels)


def ood_auroc(in_scores: torch.Tensor, out_scores: torch.Tensor) -> float:
    scores = torch.cat([in_scores, out_scores])
    return auroc(scores, torch.cat([torch.zeros(len(in_scores)), torch.ones(len(out_scores))]))


def knn_accuracy(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor, k: int = 20,
                 num_classes: int | None = None, chunk: int = 1024) -> float:
    """Majority vote of the k most cosine-similar training embeddings (ties: the lowest class)."""
    num_classes = num_classes or int(train_y.max()) + 1
    train_z, test_z = F.normalize(train_z.float(), dim=-1), F.normalize(test_z.float(), dim=-1)
    correct = 0
    for start in range(0, len(test_z), chunk):
        block = test_z[start:start + chunk]
        nearest = (block @ train_z.T).topk(min(k, len(train_z)), dim=1).indices
        votes = F.one_hot(train_y[nearest], num_classes).sum(dim=1)
        correct += int((votes.argmax(dim=1) == test_y[start:start + chunk]).sum())
    return correct / len(test_z)
