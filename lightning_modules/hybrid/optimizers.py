"""Optimizer levers that compose: Lookahead(GradientCentralization(AdamW)), with SAM's two
passes driven by the module (manual optimization) around whatever that stack is.

SAM (Foret et al., ICLR 2021): ascend to w + eps, eps = rho * g / ||g||, take the gradient
there, restore w and let the base optimizer step with that gradient. Adaptive SAM (Kwon et al.,
ICML 2021): eps = rho * T^2 g / ||T g||, T = diag(|w|). Why not a closure-taking optimizer: under
Lightning's 16-bit GradScaler the closure is evaluated before `optimizer.step()` and the step gets
no closure, so a closure-based SAM silently becomes its base optimizer; and a second closure
call would run `training_step` (BatchNorm statistics, metrics, logs) twice.
"""

import torch
from torch.optim import Optimizer


class SAM:
    """The ascent / restore halves of a SAM step over `params`."""

    def __init__(self, params, rho: float = 0.05, adaptive: bool = False):
        self.params = [p for p in params if p.requires_grad]
        self.rho, self.adaptive = rho, adaptive
        self.offsets: list[torch.Tensor | None] = []

    @torch.no_grad()
    def ascend(self) -> torch.Tensor:
        """w <- w + eps, from the gradients now in .grad; returns ||g|| (or ||T g||)."""
        scaled = [(p.abs() * p.grad if self.adaptive else p.grad) if p.grad is not None else None for p in self.params]
        norm = torch.norm(torch.stack([g.norm() for g in scaled if g is not None])) if any(g is not None for g in scaled) else torch.tensor(0.0)
        factor = self.rho / (norm + 1e-12)
        self.offsets = []
        for p, g in zip(self.params, scaled):
            if g is None:
                self.offsets.append(None)
                continue
            offset = (p.abs() * g if self.adaptive else g) * factor
            p.add_(offset)
            self.offsets.append(offset)
        return norm

    @torch.no_grad()
    def restore(self) -> None:
        """w <- w - eps (back to the point where the base optimizer steps)."""
        for p, offset in zip(self.params, self.offsets):
            if offset is not None:
                p.sub_(offset)
        self.offsets = []


class _Wrapper(Optimizer):
    """An optimizer around `base` sharing its param groups (so lr schedules reach the base)."""

    def __init__(self, base: Optimizer):
        super().__init__(base.param_groups, base.defaults)
        self.base = base
        self.param_groups = base.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def _closure_loss(self, closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


class GradientCentralization(_Wrapper):
    """Yong et al. (ECCV 2020): before the base step, g_w <- g_w - mean(g_w) over the fan-in of each
    output row (all dims but the first) of every parameter with more than one dimension; 1-D
    parameters (biases, norms) are left alone."""

    @torch.no_grad()
    def centralize(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.ndim > 1:
                    p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.ndim)), keepdim=True))

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        self.centralize()
        self.base.step()
        return loss

    def state_dict(self):
        return self.base.state_dict()

    def load_state_dict(self, state_dict):
        self.base.load_state_dict(state_dict)


class Lookahead(_Wrapper):
    """Zhang, Lucas, Hinton, Ba (NeurIPS 2019): k fast steps of the base optimizer, then
    phi <- phi + alpha (theta - phi), theta <- phi. The slow weights start at the initial weights
    (phi_0 = theta_0), so the first cycle already interpolates (timm's Lookahead starts them lazily
    at the first sync, which makes its first cycle a no-op, and defaults to k = 6)."""

    def __init__(self, base: Optimizer, k: int = 5, alpha: float = 0.5):
        super().__init__(base)
        self.k, self.alpha = k, alpha
        self.fast_steps = 0
        self.slow = [[p.detach().clone() for p in group["params"]] for group in self.param_groups]

    @torch.no_grad()
    def synchronize(self) -> None:
        for group, slow_group in zip(self.param_groups, self.slow):
            for p, slow in zip(group["params"], slow_group):
                slow.add_(p.detach() - slow, alpha=self.alpha)
                p.copy_(slow)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        self.base.step()
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            self.synchronize()
        return loss

    def state_dict(self):
        return {"base": self.base.state_dict(), "slow": self.slow, "fast_steps": self.fast_steps}

    def load_state_dict(self, state_dict):
        self.base.load_state_dict(state_dict["base"])
        self.fast_steps = int(state_dict["fast_steps"])
        for slow_group, saved_group in zip(self.slow, state_dict["slow"]):
            for slow, saved in zip(slow_group, saved_group):
                slow.copy_(saved)


def wrap_optimizer(base: Optimizer, grad_centralization: bool, lookahead_k: int | None, lookahead_alpha: float) -> Optimizer:
    """base -> GradientCentralization(base) -> Lookahead(...), as switched on."""
    optimizer = GradientCentralization(base) if grad_centralization else base
    if lookahead_k:
        optimizer = Lookahead(optimizer, lookahead_k, lookahead_alpha)
    return optimizer
