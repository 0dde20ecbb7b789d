"""DeiT students and token-map readout: sizes, heads, drop path, attention, position embeddings, stem."""

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from lightning_modules.image.nets.deit import DEIT_SIZES, DeiT, deit, stem_strides
from lightning_modules.image.nets.deit_features import layer_count, logits_and_token_maps, seresnet_stage_ends
from lightning_modules.image.nets.seresnet import seresnet_mnist


@pytest.mark.parametrize("size,dims", [("tiny", (192, 12, 3)), ("small", (384, 12, 6)), ("base", (768, 12, 12))])
def test_named_sizes(size, dims):
    with torch.device("meta"):  # shapes only: no memory, no weight init time
        net = deit(size, img_size=28, patch_size=4, in_chans=1, num_classes=10)
    embed_dim, depth, heads = dims
    assert (net.embed_dim, len(net.blocks), net.blocks[0].attn.num_heads) == (embed_dim, depth, heads)
    assert net.blocks[0].mlp.fc1.out_features == 4 * embed_dim  # mlp ratio 4.0
    assert net.pos_embed.shape == (1, 7 * 7 + 2, embed_dim)  # 49 patches + class + distillation token
    assert DEIT_SIZES[size] == dims


@pytest.mark.parametrize("img_size,in_chans", [(28, 1), (32, 3)])
def test_two_heads_in_training_their_average_at_inference(img_size, in_chans):
    torch.manual_seed(0)
    net = deit("micro", img_size=img_size, in_chans=in_chans, num_classes=7, drop_path_rate=0.0).eval()
    x = torch.randn(3, in_chans, img_size, img_size)
    cls_logits, dist_logits = net(x, separate_heads=True)
    assert cls_logits.shape == dist_logits.shape == (3, 7)
    assert not torch.allclose(cls_logits, dist_logits)
    torch.testing.assert_close(net(x), (cls_logits + dist_logits) / 2)
    net.train()  # the plain call averages in training mode too (distilled_training stays off)
    torch.testing.assert_close(net(x), (cls_logits + dist_logits) / 2)


def test_drop_path_rises_linearly_over_the_blocks():
    net = deit("micro", drop_path_rate=0.3)
    rates = [block.drop_path1.drop_prob if hasattr(block.drop_path1, "drop_prob") else 0.0 for block in net.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.tensor([0.0, 0.1, 0.2, 0.3]))


def test_fused_attention_is_on_and_matches_the_explicit_softmax():
    torch.manual_seed(0)
    net = deit("micro", drop_path_rate=0.0).eval()
    assert all(block.attn.fused_attn for block in net.blocks)
    x = torch.randn(2, 1, 28, 28)
    fused = net(x)
    for block in net.blocks:
        block.attn.fused_attn = False  # softmax(q k^T / sqrt(d)) v written out
    torch.testing.assert_close(net(x), fused, atol=1e-5, rtol=1e-5)
    assert not any(block.attn.fused_attn for block in deit("micro", fused_attn=False).blocks)


def test_position_embedding_is_resized_bicubically_for_another_input_size():
    torch.manual_seed(0)
    trained_at_28 = deit("micro", img_size=28, drop_path_rate=0.0).eval()
    x = torch.randn(2, 1, 32, 32)
    out = trained_at_28(x)  # 8x8 grid instead of 7x7
    static_32 = deit("micro", img_size=32, drop_path_rate=0.0, dynamic_img_size=False).eval()
    state = trained_at_28.state_dict()
    for mode, should_match in (("bicubic", True), ("bilinear", False)):
        state["pos_embed"] = resample_abs_pos_embed(trained_at_28.pos_embed, [8, 8], [7, 7], num_prefix_tokens=2, interpolation=mode)
        static_32.load_state_dict(state)
        assert torch.allclose(static_32(x), out, atol=1e-5) == should_match, mode
    # the class and distillation tokens' embeddings are kept as they are
    torch.testing.assert_close(state["pos_embed"][:, :2], trained_at_28.pos_embed[:, :2])


def test_conv_stem_replaces_the_patch_embedding_on_the_same_grid():
    assert [stem_strides(p) for p in (4, 7, 8, 2)] == [(2, 2, 1), (1, 1, 7), (2, 2, 2), (2, 1, 1)]
    net = deit("micro", conv_stem=True, stem_chans=16).eval()
    layers = [type(m).__name__ for m in net.patch_embed.proj]
    assert layers == ["Conv2d", "BatchNorm2d", "GELU", "Conv2d", "BatchNorm2d", "GELU", "Conv2d"]
    assert net.patch_embed.grid_size == (7, 7) and net.pos_embed.shape[1] == 49 + 2
    _, _, maps = net(torch.randn(2, 1, 28, 28), token_layers=[0, 3])
    assert [m.shape for m in maps] == [(2, 96, 7, 7)] * 2
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="not a multiple"):
        DeiT(img_size=28, patch_size=5)


def test_token_maps_come_from_the_same_pass_as_the_logits():
    torch.manual_seed(0)
    student = deit("micro", drop_path_rate=0.0).eval()
    x = torch.randn(2, 1, 28, 28)
    logits, maps = logits_and_token_maps(student, x, [1, 3])
    torch.testing.assert_close(logits, student(x))
    assert [m.shape for m in maps] == [(2, 96, 7, 7)] * 2 and layer_count(student) == 4
    teacher = seresnet_mnist().eval()
    assert seresnet_stage_ends(teacher) == [1, 3, 5] and layer_count(teacher) == 3
    logits, maps = logits_and_token_maps(teacher, x, [2, 1])
    torch.testing.assert_close(logits, teacher(x))
    assert [m.shape for m in maps] == [(2, 128, 7, 7), (2, 64, 14, 14)]  # in the order asked for
    torch.testing.assert_close(maps[0], teacher.forward_features(x))


def test_a_timm_cnn_teacher_gives_its_stage_outputs():
    import timm

    cnn = timm.create_model("resnet10t", num_classes=10, in_chans=1).eval()
    logits, maps = logits_and_token_maps(cnn, torch.randn(2, 1, 32, 32), [3, 4])
    assert logits.shape == (2, 10) and [m.shape[1] for m in maps] == [256, 512]


def test_bf16_train_step_path_runs_on_cpu():
    from bench.deit import train_step_rate

    torch.manual_seed(0)
    images, labels = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    assert train_step_rate(deit("micro"), images, labels, precision="bf16", steps=1, warmup=1) > 0


@pytest.mark.gpu
def test_gpu_path_bf16_and_compile():
    from bench.deit import train_step_rate

    images, labels = torch.randn(64, 1, 28, 28, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    assert train_step_rate(deit("tiny"), images, labels, precision="bf16", compile=True, steps=2) > 0
