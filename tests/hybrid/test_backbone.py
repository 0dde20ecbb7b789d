"""The hybrid backbone: ablation modes, the gate formula, CBAM, local pretrained weights."""

import pytest
import torch
import torch.nn.functional as F

from hylab.errors import UserError
from tests.hybrid.conftest import CNN, tiny


@pytest.mark.parametrize("mode,streams", [("cnn", (True, False)), ("vit", (False, True)), ("concat", (True, True)), ("gated", (True, True))])
def test_modes_build_only_their_streams(mode, streams, images):
    net = tiny(mode=mode)
    backbone = net.backbone
    assert (backbone.cnn is not None, backbone.vit is not None) == streams
    assert (backbone.gate is not None) == (mode == "gated")
    assert net(images).shape == (4, 10)


def test_gate_is_sigmoid_of_a_relu_mlp_and_scales_the_concatenation(images):
    net = tiny(mode="gated").eval()
    b = net.backbone
    with torch.no_grad():
        z = torch.cat([b.cnn.forward_head(b.cnn.forward_features(images), pre_logits=True), b.vit(images)], dim=1)
        alpha = torch.sigmoid(b.gate.fc2.weight @ F.relu(b.gate.fc1.weight @ z.T + b.gate.fc1.bias[:, None]) + b.gate.fc2.bias[:, None]).T
        expected = b.norm(b.proj(z * alpha))
        got = b(images)
    torch.testing.assert_close(got, expected)
    dc = b.stream_dims[0]
    assert b.last_gate["cnn"] == pytest.approx(alpha[:, :dc].mean().item(), abs=1e-6)
    assert b.last_gate["vit"] == pytest.approx(alpha[:, dc:].mean().item(), abs=1e-6)


def test_concat_has_no_gate(images):
    b = tiny(mode="concat").backbone.eval()
    with torch.no_grad():
        z = torch.cat([b.cnn.forward_head(b.cnn.forward_features(images), pre_logits=True), b.vit(images)], dim=1)
        torch.testing.assert_close(b(images), b.norm(b.proj(z)))


def test_cbam_wraps_every_convnext_stage_and_matches_its_formula():
    net = tiny(mode="cnn", cbam=True).eval()
    stages = net.backbone.cnn.stages
    assert all(type(stage[1]).__name__ == "CbamModule" for stage in stages)
    cbam = stages[1][1]
    x = torch.randn(2, 16, 7, 7)
    c = cbam.channel
    mlp = lambda v: c.fc2(F.relu(c.fc1(v)))  # noqa: E731
    channel = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    pooled = torch.cat([channel.mean(1, keepdim=True), channel.amax(1, keepdim=True)], dim=1)
    bn = cbam.spatial.conv.bn  # timm adds a BatchNorm after the 7x7 conv (not in the paper)
    conv = F.batch_norm(cbam.spatial.conv.conv(pooled), bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), channel * torch.sigmoid(conv))


def test_pretrained_weights_come_from_a_local_file_only(tmp_path, images):
    import timm

    stream = timm.create_model(CNN["name"], pretrained=False, num_classes=0, in_chans=1, **CNN["kwargs"])
    path = tmp_path / "cnn.pth"
    torch.save(stream.state_dict(), path)
    net = tiny(mode="cnn", cnn={**CNN, "pretrained": str(path)}).eval()
    for name, value in stream.state_dict().items():
        torch.testing.assert_close(net.backbone.cnn.state_dict()[name], value)
    with pytest.raises(UserError, match=r"^model.net.cnn.pretrained=.*no such file"):
        tiny(mode="cnn", cnn={**CNN, "pretrained": str(tmp_path / "missing.pth")})


def test_bad_settings_fail_with_one_line():
    with pytest.raises(UserError, match=r"^model.net.mode='both' is not allowed"):
        tiny(mode="both")
    with pytest.raises(UserError, match=r"^model.net.cnn.name='no_such_net' is not a timm model"):
        tiny(cnn={**CNN, "name": "no_such_net"})
    with pytest.raises(UserError, match="cbam=true acts on the CNN stream"):
        tiny(mode="vit", cbam=True)


def test_sam_refuses_a_16_bit_grad_scaler_in_one_line():
    from lightning_modules.hybrid.module import check_sam_precision

    check_sam_precision(True, "bf16-mixed")
    check_sam_precision(False, "16-mixed")
    with pytest.raises(UserError, match=r"^model.optimization.sam.enabled=true with trainer.precision=16-mixed"):
        check_sam_precision(True, "16-mixed")
