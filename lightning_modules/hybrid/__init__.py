"""Hybrid CNN + ViT representation learning on timm: two streams fused by a learned gate.

- nets/: plain nn.Modules. backbone.py (HybridBackbone: the streams, the gate, the ablation
  modes; HybridNet: backbone + linear or cosine head; `hybrid_net` builds it from config),
  streams.py (timm streams by name, local pretrained weights), vit_stream.py (the ViT stream's
  own block loop for the token levers), cbam.py, token_learner.py, lora.py, tome.py.
- losses.py: AdaFace, evidential deep learning (EDL), supervised contrastive (SupCon),
  logit distillation.
- optimizers.py: SAM / ASAM (two-pass ascent), Lookahead, gradient centralization.
- metrics.py: misclassification / OOD AUROC, embedding kNN accuracy.
- module.py: HybridClassifier (the LightningModule: the loss, SAM's manual step, the teacher).
- callbacks.py: EncoderFromStore (a pre-trained encoder from the run store: linear probe,
  fine-tuning or LoRA).
- settings.py: the schemas of the model, net and callback targets.
The data with two augmented views (SupCon) is datamodules/hybrid/.
"""
