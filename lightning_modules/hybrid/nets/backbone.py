"""HybridBackbone: a CNN stream and a ViT stream fused by a learned channel gate.

    Z  = [F_cnn || F_vit]                     pooled stream features, D = D_cnn + D_vit
    a  = sigma(W2 ReLU(W1 Z))                 W1: D -> D / reduction, W2: D / reduction -> D
    Z' = Z * a,   E = LayerNorm(P Z')         P: D -> fusion_dim

Ablation modes: "cnn" / "vit" (one stream, the other is not built), "concat" (Z' = Z, no gate),
"gated". `last_gate` holds the mean gate of each stream for the latest batch (logged by the
module). HybridNet adds the head: linear logits, or cosine logits s * cos(theta) for margin
losses (AdaFace), and a projection head for contrastive pre-training.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hylab.errors import UserError
from lightning_modules.hybrid.nets.cbam import add_cbam
from lightning_modules.hybrid.nets.lora import apply_lora
from lightning_modules.hybrid.nets.streams import create_stream, pooled
from lightning_modules.hybrid.nets.vit_stream import ViTStream

MODES = ("cnn", "vit", "concat", "gated")


class ChannelGate(nn.Module):
    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Linear(dim, max(1, dim // reduction))
        self.fc2 = nn.Linear(max(1, dim // reduction), dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """a = sigma(W2 ReLU(W1 z))."""
        return torch.sigmoid(self.fc2(F.relu(self.fc1(z))))


class HybridBackbone(nn.Module):
    def __init__(self, cnn: nn.Module | None, vit: nn.Module | None, mode: str = "gated", fusion_dim: int = 1024, gate_reduction: int = 4):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.cnn, self.vit = cnn, vit
        dims = [stream.num_features for stream in (cnn, vit) if stream is not None]
        self.stream_dims = dims
        total = sum(dims)
        self.gate = ChannelGate(total, gate_reduction) if mode == "gated" else None
        self.proj = nn.Linear(total, fusion_dim)
        self.norm = nn.LayerNorm(fusion_dim)
        self.num_features = fusion_dim
        self.last_gate: dict[str, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cnn is not None:
            parts.append(pooled(self.cnn, x))
        if self.vit is not None:
            parts.append(self.vit(x))
        z = torch.cat(parts, dim=1)
        if self.gate is not None:
            alpha = self.gate(z)
            z = z * alpha
            cnn_dim = self.stream_dims[0]
            self.last_gate = {"cnn": alpha[:, :cnn_dim].mean().detach(), "vit": alpha[:, cnn_dim:].mean().detach()}
        return self.norm(self.proj(z))


class CosineHead(nn.Module):
    """logits_j = s * cos(theta_j), cos(theta_j) = <z/|z|, w_j/|w_j|>."""

    def __init__(self, dim: int, num_classes: int, scale: float = 64.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_uniform_(self.weight)
        self.scale = scale

    def cosine(self, z: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(z, dim=-1), F.normalize(self.weight, dim=-1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosine(z)


class HybridNet(nn.Module):
    def __init__(self, backbone: HybridBackbone, num_classes: int, head: str = "linear", cosine_scale: float = 64.0, projection_dim: int = 0):
        super().__init__()
        self.backbone = backbone
        dim = backbone.num_features
        self.head = CosineHead(dim, num_classes, cosine_scale) if head == "cosine" else nn.Linear(dim, num_classes)
        self.projection = (nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))
                           if projection_dim > 0 else None)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def hybrid_net(
    num_classes: int,
    in_chans: int = 1,
    mode: str = "gated",
    fusion_dim: int = 1024,
    gate_reduction: int = 4,
    cnn: Mapping | None = None,
    vit: Mapping | None = None,
    cbam: bool = False,
    token_learner: Mapping | None = None,
    tome: Mapping | None = None,
    lora: Mapping | None = None,
    head: str = "linear",
    cosine_scale: float = 64.0,
    projection_dim: int = 0,
) -> HybridNet:
    """The net from config (settings in lightning_modules/hybrid/settings.py, HybridNetSettings)."""
    from hylab.settings import parse_settings
    from lightning_modules.hybrid.settings import HybridNetSettings

    given = dict(num_classes=num_classes, in_chans=in_chans, mode=mode, fusion_dim=fusion_dim, gate_reduction=gate_reduction,
                 cnn=cnn, vit=vit, cbam=cbam, token_learner=token_learner, tome=tome, lora=lora, head=head,
                 cosine_scale=cosine_scale, projection_dim=projection_dim)
    s = parse_settings(HybridNetSettings, {k: v for k, v in given.items() if v is not None}, "model.net")
    cnn_model = vit_model = None
    if s.mode != "vit":
        cnn_model = create_stream(s.cnn.name, "model.net.cnn", in_chans, s.cnn.drop_path_rate, s.cnn.pretrained, **s.cnn.kwargs)
        if s.cbam:
            add_cbam(cnn_model)
    elif s.cbam:
        raise UserError("model.net.cbam=true acts on the CNN stream, which model.net.mode=vit does not build")
    if s.mode != "cnn":
        raw = create_stream(s.vit.name, "model.net.vit", in_chans, s.vit.drop_path_rate, s.vit.pretrained, **s.vit.kwargs)
        if s.lora.rank > 0:
            apply_lora(raw, s.lora.rank, s.lora.alpha, s.lora.targets)
        vit_model = ViTStream(raw, s.token_learner.tokens, s.token_learner.layer, s.tome.r, s.tome.proportional)
    elif s.token_learner.tokens or s.tome.r or s.lora.rank:
        raise UserError("model.net.token_learner / tome / lora act on the ViT stream, which model.net.mode=cnn does not build")
    backbone = HybridBackbone(cnn_model, vit_model, s.mode, s.fusion_dim, s.gate_reduction)
    return HybridNet(backbone, num_classes, s.head, s.cosine_scale, s.projection_dim)


def parameter_counts(net: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in net.parameters())
    return sum(p.numel() for p in net.parameters() if p.requires_grad), total
