"""Logits and token maps of chosen layers from one forward pass, for any teacher or student.

A "token map" is a (B, C, H, W) grid of features; flattened it is H*W tokens of width C.
How layers are numbered depends on the net:
- ViT / DeiT (timm, anything with `forward_intermediates` and `blocks`): block indices, e.g.
  [6, 11] of a 12-block DeiT; the prefix (class, distillation) tokens are left out.
- Other timm nets with `forward_intermediates` (ResNets, ConvNeXts ...): timm's feature
  indices, i.e. the outputs of its stages.
- hylab's SE-ResNet (`stem` + `blocks`): stage indices; a stage ends before each block that
  halves the resolution. seresnet_mnist has stages 0, 1, 2 at 28x28 (32 ch), 14x14 (64 ch),
  7x7 (128 ch).
"""

import torch
from torch import nn


def seresnet_stage_ends(net: nn.Module) -> list[int]:
    """Index of the last block of each stage of an SE-ResNet (a stage ends before a strided block)."""
    strided = [i for i, block in enumerate(net.blocks) if block.conv1.stride != (1, 1)]
    return [i - 1 for i in strided] + [len(net.blocks) - 1]


def layer_count(net: nn.Module) -> int:
    """How many layer indices `token_maps` accepts for this net."""
    if hasattr(net, "forward_intermediates"):
        return len(net.blocks) if hasattr(net, "blocks") else len(net.feature_info)
    if hasattr(net, "stem") and hasattr(net, "blocks"):
        return len(seresnet_stage_ends(net))
    raise TypeError(f"{type(net).__name__} has no known way to read out token maps")


def logits_and_token_maps(net: nn.Module, x: torch.Tensor, layers: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(logits, [token map (B, C, H, W) of each layer in `layers`]) from one forward pass."""
    if hasattr(net, "forward_intermediates"):
        if hasattr(net, "dist_token") and hasattr(net, "heads"):  # a hylab DeiT: both heads, averaged
            cls_logits, dist_logits, maps = net(x, token_layers=layers)
            return (cls_logits + dist_logits) / 2, maps
        features, maps = net.forward_intermediates(x, indices=list(layers), output_fmt="NCHW")
        return net.forward_head(features), maps
    if hasattr(net, "stem") and hasattr(net, "blocks"):
        ends = seresnet_stage_ends(net)
        wanted = {ends[layer]: position for position, layer in enumerate(layers)}
        maps: list[torch.Tensor | None] = [None] * len(layers)
        out = net.stem(x)
        for index, block in enumerate(net.blocks):
            out = block(out)
            if index in wanted:
                maps[wanted[index]] = out
        return net.head(out.mean(dim=(2, 3))), maps
    raise TypeError(f"{type(net).__name__} has no known way to read out token maps")
