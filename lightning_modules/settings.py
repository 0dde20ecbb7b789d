"""Settings of the shared LightningModules (torch-free): the generic classifier.

`SCHEMAS` maps config target names to their dataclass (hylab.settings); family modules that
extend the classifier extend `ClassifierSettings`.
"""

from dataclasses import dataclass, field
from typing import Any

from hylab.settings import between


@dataclass
class ClassifierSettings:
    num_classes: int = field(default=10, metadata=between(2, None))
    label_smoothing: float = field(default=0.0, metadata=between(0, 1, high_open=True))
    f1_macro: bool = False
    # net parameter prefix -> lr multiplier
    lr_scales: dict[str, float] | None = None
    compile: bool = False
    # objects built from their own _target_; a group option without one (model/scheduler=none) leaves its keys
    net: Any = None
    optimizer: Any = None
    scheduler: Any = None

    def __post_init__(self):
        for prefix, scale in (self.lr_scales or {}).items():
            if not scale > 0:
                raise ValueError(f"lr_scales.{prefix}={scale} must be > 0")


SCHEMAS = {"Classifier": ClassifierSettings}
