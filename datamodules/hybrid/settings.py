"""Settings of the hybrid family's DataModule (torch-free; see hylab.settings)."""

from dataclasses import dataclass, field

from datamodules.image.settings import ImageDataSettings
from hylab.settings import between


@dataclass
class TwoViewImageDataSettings(ImageDataSettings):
    views: int = field(default=2, metadata=between(1, 2))


SCHEMAS = {"TwoViewImageDataModule": TwoViewImageDataSettings}
