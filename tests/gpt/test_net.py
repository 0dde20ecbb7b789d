"""The GPT net against its defining properties, and bits per byte against a hand computation."""

import math

import pytest
import torch

from lightning_modules.gpt.metrics import BitsPerByte
from lightning_modules.gpt.nets import GPT, GPTConfig, apply_rotary, norm, rotary_tables


def small_net(**overrides) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(**{"vocab_size": 64, "sequence_len": 16, "n_layer": 2, "n_head": 4, "n_embd": 32, **overrides})
    return GPT(config)


def perturb(net: GPT, scale: float = 0.05) -> GPT:
    """Move the zero-initialized projections away from zero, so blocks do something."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn_like(p))
    return net


def test_shapes_and_no_biases():
    net = small_net()
    logits = net(torch.randint(0, 64, (3, 16)))
    assert logits.shape == (3, 16, 64) and logits.dtype == torch.float32
    assert all(p.ndim == 2 for p in net.parameters())  # no biases, no norm weights
    assert net.wte.weight.data_ptr() != net.lm_head.weight.data_ptr()  # untied


def test_blocks_start_as_the_identity():
    net = small_net()
    x = torch.randn(2, 16, 32)
    cos, sin = net.cos[:16], net.sin[:16]
    for block in net.blocks:
        assert torch.equal(block(x, cos, sin), x)


def test_rms_norm_is_parameter_free_unit_rms():
    x = torch.randn(4, 8, 32) * 7
    assert torch.allclose(norm(x).pow(2).mean(-1), torch.ones(4, 8), atol=1e-4)


def test_causal_the_past_does_not_see_the_future():
    net = perturb(small_net()).eval()
    a = torch.randint(0, 64, (1, 16))
    b = a.clone()
    b[0, 10:] = (b[0, 10:] + 1) % 64
    assert torch.allclose(net(a)[0, :10], net(b)[0, :10], atol=1e-6)
    assert not torch.allclose(net(a)[0, 10:], net(b)[0, 10:])


def test_logits_are_soft_capped():
    net = small_net(logit_softcap=2.0)
    with torch.no_grad():
        net.lm_head.weight.mul_(1e4)
    logits = net(torch.randint(0, 64, (2, 16)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


def test_rotary_scores_depend_only_on_the_offset():
    cos, sin = rotary_tables(8, 32, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> float:
        return float(apply_rotary(q, cos[i], sin[i]) @ apply_rotary(k, cos[j], sin[j]))

    assert score(3, 1) == pytest.approx(score(20, 18), abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_grouped_query_attention_shrinks_keys_and_values():
    mha, gqa = small_net(), small_net(n_kv_head=2)
    assert gqa.blocks[0].attn.c_k.weight.shape == (2 * 8, 32)
    assert mha.num_parameters() - gqa.num_parameters() == 2 * 2 * (2 * 8 * 32)  # 2 layers x (k, v) x 2 heads fewer
    assert gqa(torch.randint(0, 64, (2, 16))).shape == (2, 16, 64)


def test_flops_per_token_by_hand():
    net = small_net()
    c = net.config
    block = 4 * 32 * 32 + 2 * 4 * 32 * 32  # q, k, v, proj + fc, fc-proj
    matmul_params = c.n_layer * block + 64 * 32  # + head
    assert net.flops_per_token() == 6 * matmul_params + 12 * 2 * 4 * 8 * 16


def test_bits_per_byte_by_hand():
    # token id -> bytes: 0 is a special token (0 bytes), 1 -> 1 byte, 2 -> 3 bytes, 3 -> 2 bytes
    token_bytes = torch.tensor([0, 1, 3, 2])
    targets = torch.tensor([1, 2, 0, 3, -1])
    nats = torch.tensor([0.5, 1.5, 2.0, 1.0, 9.0])  # the -1 target's value must be ignored
    metric = BitsPerByte()
    metric.update(nats[:2], targets[:2], token_bytes)  # accumulates across batches
    metric.update(nats[2:], targets[2:], token_bytes)
    loss, bpb = metric.compute()
    assert loss.item() == pytest.approx((0.5 + 1.5 + 2.0 + 1.0) / 4)
    # the special token (target 0) is in the loss but not in bits per byte
    assert bpb.item() == pytest.approx((0.5 + 1.5 + 1.0) / (math.log(2) * (1 + 3 + 2)))
    empty = BitsPerByte()
    empty.update(nats[:1], torch.tensor([-1]), token_bytes)
    assert all(math.isnan(value.item()) for value in empty.compute())  # nothing counted: no value


def test_the_depth_dial_sizes_the_net_and_scales_the_adamw_lrs():
    from functools import partial

    from lightning_modules.gpt.module import GPTLanguageModel

    config = GPTConfig(vocab_size=64, sequence_len=16, depth=6, n_kv_head=2)
    assert (config.n_layer, config.n_embd, config.n_head, config.n_kv_head) == (6, 192, 6, 2)
    assert GPTConfig(vocab_size=64, depth=6, n_kv_head=4).n_kv_head == 6  # 4 does not divide 6 heads
    module = GPTLanguageModel(GPT(GPTConfig(vocab_size=64, sequence_len=16, depth=8)), partial(torch.optim.SGD, lr=0.02),
                              partial(torch.optim.AdamW, lr=0.3), head_lr=0.008, depth=8, reference_width=128)
    assert module.adamw_lr_scale() == pytest.approx((256 / 128) ** -0.5)
