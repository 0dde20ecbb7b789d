"""Two independently augmented views of every training image (SupCon, Khosla et al. 2020).

A training batch is (view 1, labels, view 2), each view drawn with the image family's batch
augmentation (random crop after padding, flips, cutout as configured); validation and test
batches are (images, labels) as usual.
"""

from datamodules.hybrid.settings import TwoViewImageDataSettings
from datamodules.image.datamodule import ImageClassificationDataModule


class TwoViewImageDataModule(ImageClassificationDataModule):
    settings_schema = TwoViewImageDataSettings

    def __init__(self, views: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.save_hyperparameters(logger=False)
        self.views = views

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        images, labels = batch
        if not training or self.views == 1:
            return self.transform_batch(images, labels, train=training)
        first, _ = self.transform_batch(images, labels, train=True)
        second, _ = self.transform_batch(images, labels, train=True)
        return first, labels, second
