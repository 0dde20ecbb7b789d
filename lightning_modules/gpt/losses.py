"""The GPT family's loss: next-token cross-entropy.

    loss = mean over target tokens of -log softmax(logits)[target]

Targets of -1 are ignored: the chat loss mask (only the assistant's tokens are trained on) and
the padding of a batch of conversations.
"""

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against targets (B, T); reduction="none" gives (B*T,) nats."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


class SoftcappedHeadLoss(torch.autograd.Function):
    """The head, its logit soft-cap and the mean cross-entropy in one pass over row chunks:

        z = h W^T,   l = c tanh(z / c)   (c = 0: l = z),   loss = mean_i (logsumexp(l_i) - l_i[y_i])
        dloss/dz = (softmax(l) - onehot(y)) (1 - tanh(z / c)^2) / n

    The separate ops write and re-read the (tokens x vocab) logits about ten times, with
    intermediates far larger than the cache; here each chunk of rows is computed, differentiated
    and dropped while it is still in cache, and the gradients of h and W are ready after the
    forward (the same values, summed in another order: equal within fp32 rounding).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap: float, chunk_rows: int):
        counted = targets != IGNORE_INDEX
        count = counted.sum()
        want_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_grad else None
        grad_weight = torch.zeros_like(weight) if want_grad else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.size(0), chunk_rows):
            h, y, keep = hidden[start : start + chunk_rows], targets[start : start + chunk_rows], counted[start : start + chunk_rows]
            rows = torch.arange(h.size(0), device=h.device)
            z = (h @ weight.t()).float()
            squashed = torch.tanh(z.div_(softcap)) if softcap else None
            logits = squashed * softcap if softcap else z
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits[rows, y.clamp_min(0)]
            total += ((lse - picked) * keep).sum()
            if want_grad:
                grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
                grad[rows, y.clamp_min(0)] -= 1.0
                grad.mul_(keep[:, None])
                if softcap:
                    grad.mul_(squashed.square_().neg_().add_(1.0))
                grad = grad.to(weight.dtype)
                grad_hidden[start : start + chunk_rows] = grad @ weight
                grad_weight.addmm_(grad.t(), h)
        ctx.save_for_backward(grad_hidden, grad_weight, count)
        return total / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        return grad_hidden * scale.to(grad_hidden.dtype), grad_weight * scale.to(grad_weight.dtype), None, None, None


def softcapped_head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float, chunk_rows: int = 256) -> torch.Tensor:
    """Mean next-token cross-entropy of the soft-capped logits of `hidden` (N, C) under the head
    `weight` (V, C) against `targets` (N,), without materializing the (N, V) logits and their
    intermediates: `next_token_loss(softcap(hidden @ weight.T), targets)` at a fraction of the time."""
    return SoftcappedHeadLoss.apply(hidden, weight, targets, float(softcap), chunk_rows)
