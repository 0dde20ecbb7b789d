"""The GPT net's speed changes keep its numbers: each fused piece against the plain expression it
replaces (values and gradients), and the whole net (logits, loss, gradients) against the net
written with plain ops only, as it was before the fused pieces."""

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.gpt.fused import relu_squared, rotate_half_pairs
from lightning_modules.gpt.losses import next_token_loss, softcapped_head_loss
from lightning_modules.gpt.nets import GPT, GPTConfig, norm

TOL = {"rtol": 1e-5, "atol": 1e-6}


def plain_rotary(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def values_and_grads(fn, *inputs):
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    out = fn(*leaves)
    torch.manual_seed(1)
    out.backward(torch.randn_like(out))
    return [out.detach(), *(x.grad for x in leaves)]


def test_relu_squared_equals_the_plain_expression():
    x = torch.randn(4, 8, 64)
    for fused, plain in zip(values_and_grads(relu_squared, x), values_and_grads(lambda v: F.relu(v).square(), x)):
        assert torch.equal(fused, plain)


def test_rotation_and_its_backward_equal_autograd_on_the_plain_formula():
    x = torch.randn(2, 16, 4, 8).transpose(1, 2)  # (B, H, T, D) as a non-contiguous view, as q and k are
    angles = torch.rand(16, 4) * 6
    fused = values_and_grads(lambda v: rotate_half_pairs(v, angles.cos(), angles.sin()), x)
    plain = values_and_grads(lambda v: plain_rotary(v, angles.cos(), angles.sin()), x)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("softcap", [15.0, 0.0])
def test_fused_head_loss_equals_the_logits_path(softcap):
    torch.manual_seed(0)
    hidden, weight = torch.randn(300, 32), torch.randn(96, 32)
    targets = torch.randint(0, 96, (300,))
    targets[:40] = -1  # ignored (the chat loss mask)

    def plain(h, w):
        logits = h @ w.t()
        return next_token_loss((softcap * torch.tanh(logits / softcap) if softcap else logits)[None], targets[None])

    fused = values_and_grads(lambda h, w: softcapped_head_loss(h, w, targets, softcap, chunk_rows=64), hidden, weight)
    for a, b in zip(fused, values_and_grads(plain, hidden, weight)):
        torch.testing.assert_close(a, b, **TOL)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(softcapped_head_loss(hidden, weight, targets, softcap), fused[0], **TOL)


def plain_logits(net: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The net's forward written with plain ops only (rotary by slices and cat, relu().square(),
    the soft-cap as c * tanh(z / c)), as it was computed before the fused pieces."""
    T = idx.size(1)
    cos, sin = net.cos[:T], net.sin[:T]
    x = norm(net.wte(idx))
    for block in net.blocks:
        a, h = block.attn, norm(x)
        B = h.size(0)
        q = a.c_q(h).view(B, T, a.n_head, a.head_dim).transpose(1, 2)
        k = a.c_k(h).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)
        v = a.c_v(h).view(B, T, a.n_kv_head, a.head_dim).transpose(1, 2)
        q, k = norm(plain_rotary(q, cos, sin)), norm(plain_rotary(k, cos, sin))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=a.n_kv_head != a.n_head)
        x = x + a.c_proj(y.transpose(1, 2).reshape(B, T, -1))
        x = x + block.mlp.c_proj(F.relu(block.mlp.c_fc(norm(x))).square())
    cap = net.config.logit_softcap
    logits = net.lm_head(norm(x))
    return cap * torch.tanh(logits / cap)


def test_the_net_keeps_its_logits_loss_and_gradients():
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=128, sequence_len=32, n_layer=2, n_head=4, n_kv_head=2, n_embd=64))
    with torch.no_grad():  # move the zero-initialized projections away from zero
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    idx, targets = torch.randint(0, 128, (3, 32)), torch.randint(0, 128, (3, 32))
    torch.testing.assert_close(net(idx), plain_logits(net, idx), **TOL)

    net.loss(idx, targets).backward()
    fused_grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    net.zero_grad()
    reference = next_token_loss(plain_logits(net, idx), targets)
    reference.backward()
    torch.testing.assert_close(net.loss(idx, targets), reference, **TOL)
    for name, p in net.named_parameters():
        torch.testing.assert_close(fused_grads[name], p.grad, **TOL, msg=lambda m, name=name: f"{name}: {m}")
