"""The two streams: any timm model created by name, without its classifier head.

Pretrained weights come only from a local file (`pretrained: <path>`); nothing is fetched.
A stream's pooled feature is `forward_head(forward_features(x), pre_logits=True)`, timm's
uniform model API, so any timm name works (ConvNeXt-V2, Swin-V2, ViT, ResNet ...).
"""

from pathlib import Path

from torch import nn

from hylab.errors import UserError


def create_stream(name: str, key: str, in_chans: int, drop_path_rate: float, pretrained: str | None = None, **kwargs) -> nn.Module:
    import timm

    if not timm.list_models(name):
        close = timm.list_models(f"*{name.split('_')[0][:8]}*")[:8]
        raise UserError(f"{key}.name={name!r} is not a timm model; similar names: {close}")
    try:
        model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0, drop_path_rate=drop_path_rate, **kwargs)
    except TypeError as err:
        raise UserError(f"{key}: timm model {name!r} does not take these arguments ({err})") from err
    if pretrained:
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"{key}.pretrained={pretrained}: no such file; pretrained weights are read from a local file only (null: random init)")
        from timm.models import load_checkpoint

        try:
            load_checkpoint(model, str(path), strict=False)
        except Exception as err:  # torch raises several types for foreign files
            raise UserError(f"{key}.pretrained={pretrained} could not be loaded into {name} ({type(err).__name__}: {err})") from err
    return model


def pooled(model: nn.Module, x):
    """The stream's pooled (B, D) feature through timm's forward_features / forward_head."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
