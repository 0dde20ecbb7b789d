"""HAR's LightningModule: the shared Classifier (lightning_modules/classifier.py), as
conf/model/har_classifier.yaml configures it: cross-entropy, accuracy and macro-F1
(`f1_macro: true`), layer-wise learning rates (`lr_scales`, which fine-tuning sets).

Named here so that every family's module lives at lightning_modules/<family>/module.py; a
behaviour only HAR needs would subclass Classifier in this file.
"""

from lightning_modules.classifier import Classifier

HarClassifier = Classifier

__all__ = ["HarClassifier"]
