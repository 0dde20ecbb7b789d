"""Data of the hybrid family: the image family's data sets with two augmented views per
training image (supervised contrastive pre-training).

- datamodule.py: TwoViewImageDataModule.
- settings.py: its schema.
"""
