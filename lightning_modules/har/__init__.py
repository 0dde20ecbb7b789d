"""Human-activity recognition from wearable windows, with fine-tuning from stored base models.

- module.py: HarClassifier, the shared lightning_modules/classifier.py Classifier (macro-F1 and
  lr_scales switched on by conf/model/har_classifier.yaml).
- nets.py: HarCNN, HarTransformer (plain nn.Modules).
- callbacks.py: FineTuneFromBase (a base model from the run store, frozen layers).
- aggregate.py: `python -m lightning_modules.har.aggregate <sweep>`, a sweep table that also
  counts the base models the jobs started from.
- settings.py: the schemas of the net and callback targets.
"""
