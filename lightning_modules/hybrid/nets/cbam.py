"""CBAM (Woo et al. 2018) after each stage of a CNN stream.

    channel:  F' = F * sigma(MLP(AvgPool F) + MLP(MaxPool F))
    spatial:  F'' = F' * sigma(conv7x7([mean_c F'; max_c F']))

The modules are timm's `create_attn('cbam', C)`; its spatial gate is conv -> BatchNorm (the
paper has no norm there). ConvNeXt has no attention hook in its blocks, so each stage of
`model.stages` is wrapped: stage -> CBAM(stage channels).
"""

from torch import nn

from hylab.errors import UserError


def add_cbam(model: nn.Module, key: str = "model.net.cbam") -> nn.Module:
    from timm.layers import create_attn

    stages = getattr(model, "stages", None)
    info = getattr(model, "feature_info", None)
    if not isinstance(stages, nn.Sequential) or not info:
        raise UserError(f"{key}=true needs a CNN stream with timm stages (ConvNeXt, ResNet-like); {type(model).__name__} has none")
    channels = [entry["num_chs"] for entry in info][-len(stages):]
    for index, chans in enumerate(channels):
        stages[index] = nn.Sequential(stages[index], create_attn("cbam", chans))
    return model
