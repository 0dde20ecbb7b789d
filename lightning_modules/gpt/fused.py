"""Two pieces of the GPT net with hand-written backward passes, because autograd's generic ones
cost twice the time on CPU (bench/gpt_speed.py profiles them):

- `relu_squared`: y = relu(x)^2, dy/dx = 2 relu(x). Autograd keeps x and relu(x) and runs pow's
  backward then threshold's; here the one saved tensor relu(x) gives the gradient in one product.
- `rotate_half_pairs`: rotary embedding, (x1, x2) -> (x1 cos + x2 sin, x2 cos - x1 sin) on the
  two halves of each head. Autograd differentiates the slices, products and concatenation one by
  one (zero-filled slice gradients, a split); the backward of a rotation is the inverse rotation,
  (g1, g2) -> (g1 cos - g2 sin, g1 sin + g2 cos), written directly.

Both compute the same products and sums as the plain expressions (same values in fp32).
"""

import torch


class ReLUSquared(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu(x)
        ctx.save_for_backward(r)
        return r * r

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (r,) = ctx.saved_tensors
        return grad * (2 * r)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return ReLUSquared.apply(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    """(x1 cos + s x2 sin, x2 cos - s x1 sin): s = 1 rotates forward, s = -1 back."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out1, out2 = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=out1)
    torch.mul(x2, cos, out=out2)
    if sign > 0:
        out1.add_(x2 * sin), out2.sub_(x1 * sin)
    else:
        out1.sub_(x2 * sin), out2.add_(x1 * sin)
    return out


class RotateHalfPairs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1.0), None, None


def rotate_half_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return RotateHalfPairs.apply(x, cos, sin)
