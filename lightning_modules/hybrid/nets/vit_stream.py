"""The plain-ViT stream with its token levers: TokenLearner and token merging.

Without levers the stream is timm's own forward (forward_features, forward_head). With them it
runs timm's pieces itself: patch embedding, prefix tokens and position embedding (the two timm
layouts: class token inside or outside the position table), then the blocks, where
- TokenLearner replaces the N patch tokens by K learned ones before block `token_learner_layer`
  (the class / prefix tokens stay in front, untouched);
- ToMe merges `tome_r` tokens per block (tome.py), protecting the prefix tokens.
The pooled feature is the class token (global_pool="token") or the size-weighted mean of the
other tokens (global_pool="avg").
"""

import torch
from torch import nn

from hylab.errors import UserError
from lightning_modules.hybrid.nets.streams import pooled
from lightning_modules.hybrid.nets.token_learner import TokenLearner
from lightning_modules.hybrid.nets.tome import tome_block


def is_plain_vit(model: nn.Module) -> bool:
    return all(hasattr(model, name) for name in ("patch_embed", "blocks", "pos_embed", "cls_token", "num_prefix_tokens")) and all(
        hasattr(block, "attn") and hasattr(block.attn, "qkv") for block in model.blocks)


class ViTStream(nn.Module):
    def __init__(self, vit: nn.Module, token_learner_tokens: int = 0, token_learner_layer: int | None = None,
                 tome_r: int = 0, tome_proportional: bool = True, key: str = "model.net"):
        super().__init__()
        levers = token_learner_tokens > 0 or tome_r > 0
        if levers and not is_plain_vit(vit):
            raise UserError(f"{key}: TokenLearner and token merging need a plain ViT stream (timm VisionTransformer); "
                            f"{type(vit).__name__} has windowed or no global attention")
        self.vit = vit
        self.num_features = vit.num_features
        depth = len(vit.blocks) if hasattr(vit, "blocks") else 0
        self.token_learner = TokenLearner(vit.num_features, token_learner_tokens) if token_learner_tokens > 0 else None
        self.token_learner_layer = depth // 2 if token_learner_layer is None else token_learner_layer
        if self.token_learner is not None and not 0 <= self.token_learner_layer < depth:
            raise UserError(f"{key}.token_learner.layer={token_learner_layer}: the ViT has blocks 0..{depth - 1}")
        self.tome_r = tome_r
        self.tome_proportional = tome_proportional
        self.last_sizes: torch.Tensor | None = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        tokens = vit.patch_embed(x)
        if tokens.ndim == 4:  # (B, H, W, C) from dynamic_img_size
            tokens = tokens.flatten(1, 2)
        prefix = [t.expand(tokens.shape[0], -1, -1) for t in (vit.cls_token, getattr(vit, "reg_token", None)) if t is not None]
        if getattr(vit, "no_embed_class", False):
            tokens = torch.cat([*prefix, tokens + vit.pos_embed], dim=1)
        else:
            tokens = torch.cat([*prefix, tokens], dim=1) + vit.pos_embed
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(tokens)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.token_learner is None and self.tome_r <= 0:
            return pooled(self.vit, x)
        vit, protected = self.vit, self.vit.num_prefix_tokens
        x = self.embed(x)
        sizes = x.new_ones(x.shape[0], x.shape[1], 1)
        for index, block in enumerate(vit.blocks):
            if self.token_learner is not None and index == self.token_learner_layer:
                x = torch.cat([x[:, :protected], self.token_learner(x[:, protected:])], dim=1)
                sizes = x.new_ones(x.shape[0], x.shape[1], 1)
            if self.tome_r > 0:
                x, sizes = tome_block(block, x, sizes, self.tome_r, self.tome_proportional, protected)
            else:
                x = block(x)
        x = vit.norm(x)
        self.last_sizes = sizes.detach()
        if vit.global_pool == "avg":
            rest, weight = x[:, protected:], sizes[:, protected:]
            return vit.head_drop(vit.fc_norm((rest * weight).sum(1) / weight.sum(1)))
        return vit.forward_head(x, pre_logits=True)
