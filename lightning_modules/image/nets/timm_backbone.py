"""Any timm model as a classifier, created by name from timm's registry."""

from torch import nn

from hylab.errors import UserError


def timm_classifier(
    name: str, in_chans: int, num_classes: int, pretrained: bool = False, **kwargs
) -> nn.Module:
    import timm

    if not timm.list_models(name) and name not in timm.list_pretrained(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        raise UserError(f"model.net.name={name!r} is not a timm model; similar names: {close}")
    try:
        return timm.create_model(
            name, pretrained=pretrained, in_chans=in_chans, num_classes=num_classes, **kwargs
        )
    except Exception as err:
        if pretrained:
            raise UserError(
                f"could not load pretrained weights for timm model {name!r} ({err}); they come from "
                "the Hugging Face hub, which needs a network or a filled HF cache "
                "(HF_HUB_OFFLINE=1 with the weights cached); or set model.net.pretrained=false"
            ) from err
        raise
