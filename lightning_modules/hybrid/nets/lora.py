"""LoRA (Hu et al. 2021) on the ViT stream's attention projections.

    h = W x + (alpha / r) * B A x,   W frozen, A (r x in) random, B (out x r) zero at init

It is a parametrization of the weight (torch.nn.utils.parametrize), not a module wrapper: every
read of `layer.weight` returns W + (alpha/r) B A, so it reaches code that calls
`F.linear(x, layer.weight, bias)` directly. timm's SwinV2 computes qkv that way with a separately
built bias, and a wrapper around the Linear module would silently not be used there.
`merge` folds the update into W (inference without the extra matmul), `unmerge` takes it out.
"""

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from hylab.errors import UserError


class LoRAWeight(nn.Module):
    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float):
        super().__init__()
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scale = alpha / rank
        self.merged = False

    def delta(self) -> torch.Tensor:
        return self.scale * (self.lora_B @ self.lora_A)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.merged else weight + self.delta()


def lora_layers(model: nn.Module, targets: list[str]) -> list[tuple[str, nn.Linear]]:
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets and ".attn" in f".{name}"]


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: list[str], key: str = "model.net.lora") -> int:
    """Parametrize the attention Linear layers named in `targets` (e.g. qkv, proj); freeze their
    W (and bias). Returns the number of layers adapted."""
    layers = lora_layers(model, targets)
    if not layers:
        raise UserError(f"{key}.targets={targets}: no attention Linear layer of that name in the ViT stream")
    for _, layer in layers:
        parametrize.register_parametrization(layer, "weight", LoRAWeight(layer.out_features, layer.in_features, rank, alpha))
        layer.parametrizations.weight.original.requires_grad_(False)
        if layer.bias is not None:
            layer.bias.requires_grad_(False)
    return len(layers)


def lora_weights(model: nn.Module) -> list[tuple[nn.Module, LoRAWeight]]:
    found = []
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            found += [(module, p) for p in module.parametrizations.weight if isinstance(p, LoRAWeight)]
    return found


@torch.no_grad()
def merge(model: nn.Module) -> None:
    for module, lora in lora_weights(model):
        if not lora.merged:
            module.parametrizations.weight.original.add_(lora.delta())
            lora.merged = True


@torch.no_grad()
def unmerge(model: nn.Module) -> None:
    for module, lora in lora_weights(model):
        if lora.merged:
            module.parametrizations.weight.original.sub_(lora.delta())
            lora.merged = False


def renamed_for_lora(model: nn.Module, state: dict) -> dict:
    """A state dict written without LoRA, keyed for `model` with LoRA: `x.weight` becomes
    `x.parametrizations.weight.original` where `x` is parametrized."""
    own = set(model.state_dict())
    out = {}
    for name, value in state.items():
        alias = name[: -len("weight")] + "parametrizations.weight.original" if name.endswith("weight") else name
        out[alias if name not in own and alias in own else name] = value
    return out
