"""TokenLearner, LoRA and ToMe against their formulas and invariants."""

import pytest
import torch
from torch import nn

from lightning_modules.hybrid.nets import lora as lora_lib
from lightning_modules.hybrid.nets.token_learner import TokenLearner
from lightning_modules.hybrid.nets.tome import attention, bipartite_soft_matching, merge_tokens, tome_block
from lightning_modules.hybrid.nets.vit_stream import ViTStream
from tests.hybrid.conftest import tiny, tiny_vit


def test_token_learner_weights_sum_to_one_over_positions_and_pool_the_tokens():
    learner = TokenLearner(12, num_tokens=8)
    x = torch.randn(3, 20, 12)
    alpha = learner.weights(x)
    assert alpha.shape == (3, 20, 8)
    torch.testing.assert_close(alpha.sum(dim=1), torch.ones(3, 8))
    torch.testing.assert_close(learner(x), alpha.transpose(1, 2) @ x)
    nn.init.zeros_(learner.mlp[-1].weight), nn.init.zeros_(learner.mlp[-1].bias)
    torch.testing.assert_close(learner(x), x.mean(dim=1, keepdim=True).expand(-1, 8, -1))  # uniform weights: the mean


def test_token_learner_in_the_stream_keeps_the_class_token(images):
    net = tiny(mode="vit", token_learner={"tokens": 4, "layer": 1})
    assert net(images).shape == (4, 10)
    assert net.backbone.vit.last_sizes.shape[1] == 1 + 4


def test_lora_starts_as_the_frozen_model_and_reaches_the_forward_pass(images):
    torch.manual_seed(0)
    vit = tiny_vit()
    reference = tiny_vit()
    reference.load_state_dict(vit.state_dict())
    count = lora_lib.apply_lora(vit, rank=4, alpha=8, targets=["qkv", "proj"])
    assert count == 2 * len(vit.blocks)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), reference(images))  # B = 0
    layer = vit.blocks[0].attn.qkv
    assert not layer.parametrizations.weight.original.requires_grad and not layer.bias.requires_grad
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad and "lora_" in n}
    assert len(trainable) == 2 * count
    adapter = layer.parametrizations.weight[0]
    with torch.no_grad():
        adapter.lora_B.normal_()
        expected = layer.parametrizations.weight.original + (8 / 4) * adapter.lora_B @ adapter.lora_A
        torch.testing.assert_close(layer.weight, expected)  # h = W x + (alpha / r) B A x
        adapted = vit(images)
        assert not torch.allclose(adapted, reference(images))
        lora_lib.merge(vit)
        assert adapter.merged
        torch.testing.assert_close(vit(images), adapted, rtol=1e-4, atol=1e-5)
        lora_lib.unmerge(vit)
        torch.testing.assert_close(layer.parametrizations.weight.original, reference.blocks[0].attn.qkv.weight, rtol=1e-5, atol=1e-6)


def test_lora_reaches_swinv2_whose_qkv_is_an_f_linear_call():
    import timm

    torch.manual_seed(0)
    swin = timm.create_model("swinv2_tiny_window8_256", pretrained=False, num_classes=0, in_chans=1, img_size=32,
                             window_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2)).eval()
    attn = swin.layers[0].blocks[0].attn  # SwinV2's residual post-norms start at 0: test the attention itself
    windows = torch.randn(3, 16, 16)  # (windows * B, 4 x 4 tokens, C)
    with torch.no_grad():
        before = attn(windows)
        original = attn.qkv.forward
        attn.qkv.forward = lambda inp: original(inp) + 1.0  # what a module wrapper does: never called
        assert torch.equal(attn(windows), before)
        attn.qkv.forward = original
    lora_lib.apply_lora(swin, rank=2, alpha=2, targets=["qkv"])
    with torch.no_grad():
        torch.testing.assert_close(attn(windows), before)
        for _, adapter in lora_lib.lora_weights(swin):
            adapter.lora_B.normal_()
        assert not torch.allclose(attn(windows), before, atol=1e-4)  # the parametrized weight is what F.linear reads


def test_lora_trainable_share_in_the_hybrid_is_small():
    from lightning_modules.hybrid.nets.backbone import parameter_counts

    net = tiny(mode="vit", lora={"rank": 2})
    lora_params = sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    _, total = parameter_counts(net)
    assert 0 < lora_params / total < 0.1


def test_tome_r0_is_bit_identical_to_the_unmerged_vit(images):
    torch.manual_seed(0)
    vit = tiny_vit().eval()
    stream = ViTStream(vit, tome_r=0)
    with torch.no_grad():
        assert torch.equal(stream(images), vit.forward_head(vit.forward_features(images), pre_logits=True))
        # with all sizes 1 the proportional attention is plain attention
        tokens = stream.embed(images)
        ones = tokens.new_ones(tokens.shape[0], tokens.shape[1], 1)
        block = vit.blocks[0]
        out, _ = attention(block.attn, block.norm1(tokens), ones, proportional=True)
        torch.testing.assert_close(out, block.attn(block.norm1(tokens)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("r", [1, 2, 4, 8])
def test_tome_sizes_sum_to_n_and_the_class_token_stays_first(r, images):
    vit = tiny_vit().eval()
    stream = ViTStream(vit, tome_r=r)
    with torch.no_grad():
        feature = stream(images)
    sizes = stream.last_sizes
    n = 1 + 49
    assert sizes.shape[1] == max(1, n - r * len(vit.blocks))
    torch.testing.assert_close(sizes.sum(dim=1).squeeze(-1), torch.full((4,), float(n)))
    assert torch.all(sizes[:, 0] == 1)  # protected: never merged
    assert feature.shape == (4, vit.num_features)


def test_matching_merges_the_most_similar_pair_and_never_the_class_token():
    metric = torch.randn(1, 6, 4)
    metric[0, 3] = metric[0, 2] * 2  # token 2 (set A) and token 3 (set B): cosine 1
    metric[0, 1] = metric[0, 0]  # the class token's twin: protected, must not merge
    kept, merged, destination = bipartite_soft_matching(metric, r=1, protected=1)
    assert merged.tolist() == [[1]] and destination.tolist() == [[1]]  # A index 1 = token 2 into B index 1 = token 3
    assert 0 in kept[0].tolist()


def test_merging_identical_tokens_with_proportional_attention_leaves_the_class_token_unchanged():
    torch.manual_seed(0)
    vit = tiny_vit(depth=2).eval()
    x = torch.randn(1, 6, vit.num_features)
    x[0, 3] = x[0, 2]  # a duplicate pair in A (position 2) and B (position 3)
    with torch.no_grad():
        plain = vit.blocks[1](vit.blocks[0](x))
        ones = x.new_ones(1, 6, 1)
        merged, sizes = tome_block(vit.blocks[0], x, ones, r=1, proportional=True, protected=1)
        assert sizes.squeeze(-1).tolist() == [[1, 1, 2, 1, 1]]
        proportional, _ = tome_block(vit.blocks[1], merged, sizes, r=0, proportional=True, protected=1)
        unweighted, _ = tome_block(vit.blocks[1], merged, sizes, r=0, proportional=False, protected=1)
    torch.testing.assert_close(proportional[:, 0], plain[:, 0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unweighted[:, 0], plain[:, 0], atol=1e-4)


def test_merge_is_a_size_weighted_average():
    x = torch.tensor([[[0.0], [1.0], [4.0], [2.0]]])
    sizes = torch.tensor([[[1.0], [1.0], [3.0], [1.0]]])
    merged, new_sizes = merge_tokens(x, sizes, torch.tensor([[0]]), torch.tensor([[1]]), torch.tensor([[1]]))
    assert new_sizes.squeeze(-1).tolist() == [[1, 1, 4]]
    torch.testing.assert_close(merged.squeeze(-1), torch.tensor([[0.0, 1.0, (3 * 4.0 + 2.0) / 4]]))
