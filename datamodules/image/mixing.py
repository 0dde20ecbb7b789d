"""Image classification data with MixUp / CutMix in the batch transform (training batches only).

MixUp (Zhang et al. 2018):  x~ = lam * x1 + (1 - lam) * x2,  y~ = lam * y1 + (1 - lam) * y2,
                            lam ~ Beta(alpha, alpha).
CutMix (Yun et al. 2019):   a box of side ratio cut_rat = sqrt(1 - lam) of the image is pasted
                            from x2 into x1; lam = 1 - area_cut / area after clipping the box
                            at the border, y~ mixed with that lam.
x2 is the batch reversed (timm's Mixup, mode "batch": one lam per batch, "pair" / "elem": one per
pair / per image). The mixed targets are (B, K) class probabilities, which the classifier's
loss takes as they are; label smoothing is the classifier's (model.label_smoothing), applied to
hard and mixed targets alike, so the mixer itself smooths nothing.

Mixing runs in on_after_batch_transfer, after normalization and cutout, on the device. The
distillation teacher callback runs after this hook, so it sees the very images the student sees.
"""

from collections.abc import Mapping

import torch
from timm.data import Mixup

from datamodules.image.datamodule import ImageClassificationDataModule
from datamodules.image.settings import MixingImageDataSettings, MixingSettings
from hylab.settings import parse_settings


def build_mixer(settings: MixingSettings | Mapping | None, num_classes: int) -> Mixup | None:
    if not isinstance(settings, MixingSettings):
        settings = parse_settings(MixingSettings, settings, "data.mixing")
    if settings.mixup_alpha == 0 and settings.cutmix_alpha == 0:
        return None
    return Mixup(
        mixup_alpha=settings.mixup_alpha,
        cutmix_alpha=settings.cutmix_alpha,
        prob=settings.prob,
        switch_prob=settings.switch_prob,
        mode=settings.mode,
        correct_lam=True,  # lam = 1 - clipped box area / image area
        label_smoothing=0.0,
        num_classes=num_classes,
    )


def mix_batch(mixer: Mixup, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixed images and (B, K) targets. timm mixes pairs (i, B-1-i) and needs an even batch: with
    an odd one the last image stays unmixed, with a one-hot target."""
    even = images.shape[0] - images.shape[0] % 2
    if even == 0:
        return images, torch.nn.functional.one_hot(labels, mixer.num_classes).to(images.dtype)
    head_images, head_targets = mixer(images[:even].clone(), labels[:even])
    if even == images.shape[0]:
        return head_images, head_targets.to(images.dtype)
    tail_target = torch.nn.functional.one_hot(labels[even:], mixer.num_classes).to(head_targets.dtype)
    return torch.cat([head_images, images[even:]]), torch.cat([head_targets, tail_target]).to(images.dtype)


class MixingImageDataModule(ImageClassificationDataModule):
    """ImageClassificationDataModule + MixUp / CutMix on training batches (data.mixing)."""

    settings_schema = MixingImageDataSettings

    def __init__(self, mixing: Mapping | None = None, **kwargs):
        super().__init__(**kwargs)
        self.mixer = build_mixer(self.settings.mixing, self.hparams.num_classes)

    def transform_batch(self, images: torch.Tensor, labels: torch.Tensor, train: bool):
        images, labels = super().transform_batch(images, labels, train)
        if train and self.mixer is not None:
            images, labels = mix_batch(self.mixer, images, labels)
        return images, labels
