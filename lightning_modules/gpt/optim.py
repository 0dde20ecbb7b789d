"""Optimizers of the GPT family: Muon for the block matrices, AdamW for the embedding and the head.

Muon (Jordan et al. 2024; `torch.optim.Muon`) orthogonalizes each 2-D update with a Newton-Schulz
iteration; it is meant for hidden matrices only. The embedding (a lookup table) and the head keep
AdamW, each with its own learning rate (nanochat: large for the embedding, small for the head).

The two optimizers are stepped as one `CombinedOptimizer`. Lightning's manual optimization would
be the other way, but it switches off what we want from automatic optimization
(`trainer.accumulate_grad_batches`, `gradient_clip_val`, the precision plugin's closure, the
NaN guard's `on_before_optimizer_step`) and counts `global_step` once per optimizer, i.e. twice
per step. A combined optimizer keeps all of that: one step, one closure, one LR schedule over
the union of the param groups (the same dicts the inner optimizers read).
"""

from functools import partial

import torch
from torch import nn

from hylab.errors import UserError
from lightning_modules.optim import lambda_schedule


class CombinedOptimizer(torch.optim.Optimizer):
    """Several optimizers with disjoint parameters, stepped together as one."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer]):
        self.optimizers = optimizers
        super().__init__(self._inner_groups(), defaults={})

    def _inner_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers.values() for group in optimizer.param_groups]

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def state_dict(self) -> dict:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != set(self.optimizers):
            raise UserError(
                f"the checkpoint's optimizer holds {sorted(state_dict)}, this run has {sorted(self.optimizers)}: "
                "resume with the optimizer settings it was trained with"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])
        # load_state_dict gives each inner optimizer new group dicts; share those again.
        self.param_groups = self._inner_groups()

    def __repr__(self) -> str:
        return f"CombinedOptimizer({', '.join(f'{k}={type(v).__name__}' for k, v in self.optimizers.items())})"


def gpt_parameter_roles(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters by role: the embedding table, the output head, and every other (block) matrix."""
    embedding, head = list(net.wte.parameters()), list(net.lm_head.parameters())
    taken = {id(p) for p in embedding + head}
    matrices = [p for p in net.parameters() if id(p) not in taken and p.requires_grad]
    return {"matrix": matrices, "embedding": embedding, "head": head}


def build_gpt_optimizer(net: nn.Module, matrix_optimizer: partial, embedding_optimizer: partial, head_lr: float) -> CombinedOptimizer:
    """matrix_optimizer (Muon) over the block matrices; embedding_optimizer (AdamW) over the
    embedding at its own lr and the head at `head_lr`."""
    roles = gpt_parameter_roles(net)
    if getattr(matrix_optimizer, "func", None) is torch.optim.Muon:
        flat = [tuple(p.shape) for p in roles["matrix"] if p.ndim != 2]
        if flat:
            raise UserError(
                f"Muon takes 2-D matrices only, but the block parameters include shapes {flat[:3]} (FSDP flattens "
                "parameters into shards): add model.matrix_optimizer=gpt_adamw"
            )
    matrix = matrix_optimizer([{"params": roles["matrix"], "name": "matrix"}])
    vectors = embedding_optimizer(
        [
            {"params": roles["embedding"], "name": "embedding"},
            {"params": roles["head"], "name": "head", "lr": head_lr},
        ]
    )
    return CombinedOptimizer({"matrix": matrix, "embedding_head": vectors})


def warmdown_factor(step: int, total_steps: int, warmdown_ratio: float, final_lr_ratio: float) -> float:
    """Constant 1, then a linear ramp to final_lr_ratio over the last warmdown_ratio of the steps
    (the trapezoid of modded-nanogpt / nanochat)."""
    start = total_steps * (1.0 - warmdown_ratio)
    if step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1.0, total_steps - start))
    return 1.0 - progress * (1.0 - final_lr_ratio)


def warmup_warmdown(optimizer, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, warmdown_ratio: float = 0.4, final_lr_ratio: float = 0.0):
    """Linear warm-up over `warmup_steps` optimizer steps, constant, then the linear warm-down."""
    return lambda_schedule(optimizer, warmup_steps, lambda t: warmdown_factor(t, total_steps, warmdown_ratio, final_lr_ratio))
