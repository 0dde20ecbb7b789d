"""Settings of the image family's model and net targets (torch-free; see hylab.settings)."""

from dataclasses import dataclass, field
from typing import Literal

from hylab.settings import between, non_negative, positive
from lightning_modules.settings import ClassifierSettings

DistillationMode = Literal["none", "hard", "soft"]
AlphaSchedule = Literal["constant", "linear", "cosine"]
KlReduction = Literal["batchmean", "element_mean"]
DeiTSize = Literal["micro", "tiny", "small", "base"]


@dataclass
class DistillationSettings:
    mode: DistillationMode = "none"
    alpha: float = field(default=0.5, metadata=between(0, 1))
    alpha_schedule: AlphaSchedule = "constant"
    alpha_start: float = field(default=0.0, metadata=between(0, 1))
    tau: float = field(default=3.0, metadata=positive())
    kl_reduction: KlReduction = "batchmean"


@dataclass
class TokenDistillationSettings:
    enabled: bool = False
    student_layers: list[int] = field(default_factory=lambda: [6, 11])
    teacher_layers: list[int] = field(default_factory=lambda: [1, 2])
    teacher_dims: list[int] = field(default_factory=lambda: [64, 128])
    proj_dim: int = field(default=256, metadata=between(1, None))
    lambda_tok: float = field(default=1.0, metadata=non_negative())
    lambda_rel: float = field(default=0.1, metadata=non_negative())
    rel_warmup_epochs: int = field(default=10, metadata=non_negative())
    rel_tau: float = field(default=0.1, metadata=positive())
    lambda_cka: float = field(default=0.0, metadata=non_negative())
    lambda_gram: float = field(default=0.0, metadata=non_negative())

    def __post_init__(self):
        if not (len(self.student_layers) == len(self.teacher_layers) == len(self.teacher_dims)) or not self.student_layers:
            raise ValueError("student_layers, teacher_layers and teacher_dims must be non-empty and pair up one to one")


@dataclass
class DeiTClassifierSettings(ClassifierSettings):
    label_smoothing: float = field(default=0.1, metadata=between(0, 1, high_open=True))
    distillation: DistillationSettings = field(default_factory=DistillationSettings)
    token_distillation: TokenDistillationSettings = field(default_factory=TokenDistillationSettings)


@dataclass
class SEResNetSettings:
    in_chans: int = field(default=1, metadata=between(1, None))
    num_classes: int = field(default=10, metadata=between(2, None))
    se_reduction: int = field(default=16, metadata=between(1, None))


@dataclass
class DeiTSettings:
    size: DeiTSize = "micro"
    img_size: int = field(default=28, metadata=between(1, None))
    patch_size: int = field(default=4, metadata=between(1, None))
    in_chans: int = field(default=1, metadata=between(1, None))
    num_classes: int = field(default=10, metadata=between(2, None))
    drop_rate: float = field(default=0.0, metadata=between(0, 1, high_open=True))
    drop_path_rate: float = field(default=0.1, metadata=between(0, 1, high_open=True))
    conv_stem: bool = False
    stem_chans: int = field(default=32, metadata=between(1, None))
    dynamic_img_size: bool = True
    fused_attn: bool = True

    def __post_init__(self):
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size={self.patch_size}")


@dataclass
class SpeedNetSettings:
    in_chans: int = field(default=1, metadata=between(1, None))
    num_classes: int = field(default=10, metadata=between(2, None))
    widths: list[int] = field(default_factory=lambda: [24, 32, 64, 128])
    act: Literal["gelu", "relu", "silu"] = "gelu"
    logit_scale: float = field(default=1.0, metadata=positive())
    tta_flip: bool = False
    channels_last: bool = True

    def __post_init__(self):
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ValueError(f"widths={self.widths}: give the stem width and at least one block width, all >= 1")


@dataclass
class MLPSettings:
    in_chans: int = field(default=1, metadata=between(1, None))
    image_size: int = field(default=28, metadata=between(1, None))
    num_classes: int = field(default=10, metadata=between(2, None))
    widths: list[int] = field(default_factory=lambda: [64, 128, 64])

    def __post_init__(self):
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths={self.widths}: give at least one hidden width, all >= 1")


# timm_classifier passes any further keyword to timm.create_model: it has no closed schema.
SCHEMAS = {
    "DeiTClassifier": DeiTClassifierSettings,
    "seresnet_mnist": SEResNetSettings,
    "seresnet_cifar": SEResNetSettings,
    "deit": DeiTSettings,
    "SpeedNet": SpeedNetSettings,
    "MLP": MLPSettings,
}
