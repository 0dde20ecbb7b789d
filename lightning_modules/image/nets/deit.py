"""DeiT students: timm's VisionTransformerDistilled sized for small images.

Touvron et al., "Training data-efficient image transformers & distillation through attention",
ICML 2021. The token sequence is [class token, distillation token, patch tokens]; the class token
feeds `head`, the distillation token feeds `head_dist`. Training reads both outputs separately
(`separate_heads=True`); inference returns their average, (head(z_cls) + head_dist(z_dist)) / 2,
as in DeiT.

What this adds to timm's model:
- sizes for 28x28 / 32x32 inputs (`img_size`, `patch_size`, `in_chans`), a linear drop-path
  schedule 0 -> drop_path_rate over the blocks (timm's rule), fused SDPA attention switched on
  explicitly;
- bicubic interpolation of the position embedding when the input size differs from `img_size`
  (timm's `dynamic_img_size`), so a student trained at 28x28 runs at 32x32;
- an optional hybrid conv stem (Conv-BN-GELU-Conv-BN-GELU-projection) in place of the patch
  embedding (Xiao et al., "Early convolutions help transformers see better", 2021);
- token maps of chosen blocks from the same forward pass, for token distillation.
"""

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.deit import VisionTransformerDistilled
from torch import nn

# name -> (embed_dim, depth, num_heads); mlp_ratio 4.0 for all (DeiT, Table 1).
DEIT_SIZES = {"micro": (96, 4, 3), "tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}


def stem_strides(patch_size: int) -> tuple[int, int, int]:
    """Strides of (conv1, conv2, projection) whose product is patch_size, so the token grid
    is the one the plain patch embedding would give."""
    first = 2 if patch_size % 2 == 0 else 1
    second = 2 if (patch_size // first) % 2 == 0 else 1
    return first, second, patch_size // (first * second)


class ConvStemEmbed(PatchEmbed):
    """Patch embedding whose projection is a small conv stem:
    Conv3x3(s1) -> BN -> GELU -> Conv3x3(s2) -> BN -> GELU -> Conv(k=s3, stride=s3) to embed_dim,
    with s1 * s2 * s3 = patch_size. Grid bookkeeping (grid_size, dynamic sizes) is PatchEmbed's."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, stem_chans: int = 32, **kwargs):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, **kwargs)
        s1, s2, s3 = stem_strides(self.patch_size[0])
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, stem_chans, 3, stride=s1, padding=1, bias=False),
            nn.BatchNorm2d(stem_chans),
            nn.GELU(),
            nn.Conv2d(stem_chans, stem_chans, 3, stride=s2, padding=1, bias=False),
            nn.BatchNorm2d(stem_chans),
            nn.GELU(),
            nn.Conv2d(stem_chans, embed_dim, s3, stride=s3),
        )


class DeiT(VisionTransformerDistilled):
    """A DeiT student. `net(x)` -> averaged logits; `net(x, separate_heads=True)` -> (cls, dist);
    `net(x, token_layers=[6, 11])` -> (cls, dist, [token grids (B, C, H', W') of those blocks]).
    Everything goes through forward(), so `net.compile()` covers the training paths too."""

    def __init__(
        self,
        img_size: int = 28,
        patch_size: int = 4,
        in_chans: int = 1,
        num_classes: int = 10,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        conv_stem: bool = False,
        stem_chans: int = 32,
        dynamic_img_size: bool = True,
        fused_attn: bool = True,
    ):
        if img_size % patch_size:
            raise ValueError(f"img_size={img_size} is not a multiple of patch_size={patch_size}")
        embed_layer = partial(ConvStemEmbed, stem_chans=stem_chans) if conv_stem else PatchEmbed
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            embed_layer=embed_layer,
            dynamic_img_size=dynamic_img_size,
        )
        for block in self.blocks:
            block.attn.fused_attn = fused_attn  # F.scaled_dot_product_attention (flash / mem-efficient on GPU)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-token logits, distillation-token logits) from the normed token sequence."""
        return self.head(self.head_drop(features[:, 0])), self.head_dist(self.head_drop(features[:, 1]))

    def forward(self, x: torch.Tensor, separate_heads: bool = False, token_layers: list[int] | None = None):
        if token_layers:
            features, grids = self.forward_intermediates(x, indices=list(token_layers), output_fmt="NCHW")
            return (*self.heads(features), grids)
        cls_logits, dist_logits = self.heads(self.forward_features(x))
        if separate_heads:
            return cls_logits, dist_logits
        return (cls_logits + dist_logits) / 2


def deit(size: str = "micro", **kwargs) -> DeiT:
    """A DeiT of a named size (DEIT_SIZES): micro (96 wide, 4 blocks, 3 heads) is the CPU-sized
    student of the default experiments; tiny, small, base are DeiT-Ti/S/B (Table 1; DeiT-Ti has
    5.5M parameters at 224x224 with 16x16 patches)."""
    if size not in DEIT_SIZES:
        raise ValueError(f"DeiT size {size!r} is not known; choose one of {sorted(DEIT_SIZES)}")
    embed_dim, depth, num_heads = DEIT_SIZES[size]
    return DeiT(**{"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads, **kwargs})
