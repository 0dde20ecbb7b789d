"""Settings of the hybrid family's model, net and callback targets (torch-free; hylab.settings)."""

from dataclasses import dataclass, field
from typing import Any, Literal

from hylab.net_source import NetSource
from hylab.settings import between, non_negative, positive
from lightning_modules.settings import ClassifierSettings

Mode = Literal["cnn", "vit", "concat", "gated"]
LossName = Literal["ce", "adaface", "edl", "supcon"]


@dataclass
class StreamSettings:
    name: str = "convnextv2_atto"
    drop_path_rate: float = field(default=0.0, metadata=between(0, 1, high_open=True))
    # a local weights file, or null (random init); never downloaded
    pretrained: str | None = None
    # further keywords for timm.create_model (img_size, patch_size, depths, embed_dim ...)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenLearnerSettings:
    tokens: int = field(default=0, metadata=non_negative())  # 0: off; 8 or 16 in the paper
    layer: int | None = field(default=None, metadata=non_negative())  # before this block; null: depth // 2


@dataclass
class ToMeSettings:
    r: int = field(default=0, metadata=non_negative())  # tokens merged per block; 0: off
    proportional: bool = True


@dataclass
class LoRASettings:
    rank: int = field(default=0, metadata=non_negative())  # 0: off
    alpha: float = field(default=8.0, metadata=positive())
    targets: list[str] = field(default_factory=lambda: ["qkv", "proj"])


@dataclass
class HybridNetSettings:
    num_classes: int = field(default=10, metadata=between(2, None))
    in_chans: int = field(default=1, metadata=between(1, None))
    mode: Mode = "gated"
    fusion_dim: int = field(default=1024, metadata=between(1, None))
    gate_reduction: int = field(default=4, metadata=between(1, None))
    cnn: StreamSettings = field(default_factory=StreamSettings)
    vit: StreamSettings = field(default_factory=lambda: StreamSettings(name="vit_tiny_patch16_224", drop_path_rate=0.2))
    cbam: bool = False
    token_learner: TokenLearnerSettings = field(default_factory=TokenLearnerSettings)
    tome: ToMeSettings = field(default_factory=ToMeSettings)
    lora: LoRASettings = field(default_factory=LoRASettings)
    head: Literal["linear", "cosine"] = "linear"
    cosine_scale: float = field(default=64.0, metadata=positive())
    projection_dim: int = field(default=0, metadata=non_negative())


@dataclass
class AdaFaceSettings:
    margin: float = field(default=0.4, metadata=between(0, 1))
    h: float = field(default=0.333, metadata=non_negative())
    scale: float = field(default=64.0, metadata=positive())
    momentum: float = field(default=0.01, metadata=between(0, 1))
    eps: float = field(default=1e-3, metadata=positive())


@dataclass
class EDLSettings:
    evidence: Literal["relu", "softplus", "exp"] = "relu"
    variant: Literal["mse", "log", "digamma"] = "mse"
    annealing_epochs: int = field(default=10, metadata=between(1, None))
    kl_weight: float = field(default=1.0, metadata=non_negative())


@dataclass
class SupConSettings:
    temperature: float = field(default=0.1, metadata=positive())
    # the online linear head on detached features (val/acc during pre-training)
    probe_weight: float = field(default=1.0, metadata=non_negative())


@dataclass
class LossSettings:
    name: LossName = "ce"
    adaface: AdaFaceSettings = field(default_factory=AdaFaceSettings)
    edl: EDLSettings = field(default_factory=EDLSettings)
    supcon: SupConSettings = field(default_factory=SupConSettings)


@dataclass
class SAMSettings:
    rho: float = field(default=0.05, metadata=non_negative())  # 0: the base step (SAM still runs two passes)
    adaptive: bool = False
    enabled: bool = False


@dataclass
class LookaheadSettings:
    enabled: bool = False
    k: int = field(default=5, metadata=between(1, None))
    alpha: float = field(default=0.5, metadata=between(0, 1))


@dataclass
class OptimizationSettings:
    sam: SAMSettings = field(default_factory=SAMSettings)
    lookahead: LookaheadSettings = field(default_factory=LookaheadSettings)
    grad_centralization: bool = False
    # gradient-norm clipping inside SAM's manual step (trainer.gradient_clip_val is for automatic steps)
    clip_grad_norm: float | None = field(default=None, metadata=positive())


@dataclass
class DistillSettings:
    weight: float = field(default=0.3, metadata=between(0, 1))
    temperature: float = field(default=2.0, metadata=positive())


@dataclass
class HybridClassifierSettings(ClassifierSettings):
    label_smoothing: float = field(default=0.1, metadata=between(0, 1, high_open=True))
    loss: LossSettings = field(default_factory=LossSettings)
    optimization: OptimizationSettings = field(default_factory=OptimizationSettings)
    distillation: DistillSettings | None = None


@dataclass
class EncoderFromStoreSettings(NetSource):
    """Where the encoder comes from (a checkpoint or a stored experiment) and what trains."""

    mode: Literal["linear_probe", "finetune", "lora"] = "linear_probe"


SCHEMAS = {
    "HybridClassifier": HybridClassifierSettings,
    "hybrid_net": HybridNetSettings,
    "EncoderFromStore": EncoderFromStoreSettings,
}
