"""Settings of the HAR nets and the fine-tune callback (torch-free; see hylab.settings)."""

from dataclasses import dataclass, field

from datamodules.har.settings import FineTuneModeName
from hylab.settings import between


@dataclass
class HarCNNSettings:
    in_channels: int = field(default=6, metadata=between(1, None))
    num_classes: int = field(default=7, metadata=between(2, None))
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    kernel_size: int = field(default=5, metadata=between(1, None))
    dropout: float = field(default=0.1, metadata=between(0, 1, high_open=True))


@dataclass
class HarTransformerSettings:
    in_channels: int = field(default=6, metadata=between(1, None))
    num_classes: int = field(default=7, metadata=between(2, None))
    window_size: int = field(default=100, metadata=between(1, None))
    patch_size: int = field(default=10, metadata=between(1, None))
    dim: int = field(default=64, metadata=between(1, None))
    depth: int = field(default=2, metadata=between(1, None))
    heads: int = field(default=4, metadata=between(1, None))
    mlp_ratio: float = field(default=2.0, metadata=between(0, None, low_open=True))
    dropout: float = field(default=0.1, metadata=between(0, 1, high_open=True))


@dataclass
class FineTuneSettings:
    mode: FineTuneModeName
    base_experiment: str | None = None
    base_overrides: list[str] = field(default_factory=list)
    extra_base_overrides: list[str] | None = None
    freeze: list[str] | None = None
    lr_scales: dict[str, float] | None = None
    store_dir: str | None = None
    log_dir: str | None = None


SCHEMAS = {"HarCNN": HarCNNSettings, "HarTransformer": HarTransformerSettings, "FineTuneFromBase": FineTuneSettings}
