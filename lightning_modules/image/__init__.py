"""Image classification: SE-ResNets, timm backbones and DeiT students with distillation.

- module.py: DeiTClassifier (the DeiT student; other image nets train with the shared
  lightning_modules/classifier.py Classifier), TeacherOutputs.
- losses.py: distillation losses (hard, soft, token, relational, CKA, Gram) and alpha schedules.
- nets/: plain nn.Modules: seresnet.py, speednet.py (the fmnist_speed CNN), deit.py,
  deit_features.py (token maps of any net), timm_backbone.py, mlp.py (the dense net of
  experiment=mlp_fmnist, for measuring the framework's cost per step).
- settings.py: the schemas of the model and net targets.
- The teacher is the shared callback callbacks/distillation_teacher.py.
"""
