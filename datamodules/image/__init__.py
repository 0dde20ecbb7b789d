"""Image data: digits, mnist5k, Fashion-MNIST, MNIST, CIFAR-10 held in memory.

- datamodule.py: ImageClassificationDataModule (splits, normalization, batch augmentation).
- sources.py: the readers (embedded sets, IDX files, CIFAR pickles) with clear missing-file errors.
- augment.py: batch-level crop / flip / cutout.
- mixing.py: MixingImageDataModule (MixUp / CutMix on training batches).
- settings.py: the schemas of the DataModule targets.
"""
