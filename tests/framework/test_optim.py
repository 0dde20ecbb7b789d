import math
from functools import partial

import pytest
import torch

from hylab.errors import UserError
from lightning_modules import optim


def test_schedule_factors():
    assert optim.warmup_factor(0, 10) == pytest.approx(0.1)
    assert optim.warmup_factor(9, 10) == 1.0 and optim.warmup_factor(50, 0) == 1.0
    assert optim.cosine_factor(10, 110, 10, 0.01) == pytest.approx(1.0)
    assert optim.cosine_factor(60, 110, 10, 0.01) == pytest.approx(0.01 + 0.99 * 0.5)
    assert optim.cosine_factor(110, 110, 10, 0.01) == pytest.approx(0.01)
    assert optim.triangle_factor(0, 5, 0.1) == pytest.approx(0.1)
    assert optim.triangle_factor(5, 5, 0.1) == pytest.approx(1.0)
    assert optim.triangle_factor(10, 5, 0.1) == pytest.approx(0.1)


def _lrs(schedule, steps: int, lr: float = 1.0) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=lr)
    (entry,) = schedule(opt)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        entry["scheduler"].step()
    return seen


def test_lambda_schedules_follow_their_formulas():
    cos = _lrs(partial(optim.cosine, total_steps=20, steps_per_epoch=4, warmup_epochs=1, min_lr_ratio=0.0), 20)
    assert cos[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cos[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    step = _lrs(partial(optim.step, total_steps=30, steps_per_epoch=5, step_epochs=2, gamma=0.5), 30)
    assert step[9] == 1.0 and step[10] == 0.5 and step[20] == 0.25
    one = _lrs(partial(optim.one_cycle, total_steps=20, steps_per_epoch=4, warmup_epochs=1, final_lr_ratio=0.2), 20)
    assert one[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert one[12] == pytest.approx(1.0 - 0.8 * 8 / 16) and one[-1] == pytest.approx(1.0 - 0.8 * 15 / 16)
    exp = _lrs(partial(optim.exponential, total_steps=20, steps_per_epoch=5, gamma=0.9), 20)
    assert exp[4] == 1.0 and exp[5] == pytest.approx(0.9) and exp[15] == pytest.approx(0.729)


def test_plateau_warmup_composes_with_reductions():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=1.0)
    warm, plateau = optim.plateau(opt, total_steps=100, steps_per_epoch=10, monitor="val/acc", mode="max", factor=0.5, patience=0, warmup_epochs=1)
    assert warm["interval"] == "step" and plateau["interval"] == "epoch" and plateau["monitor"] == "val/acc"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    for _ in range(12):
        opt.step()
        warm["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    plateau["scheduler"].step(0.5)
    plateau["scheduler"].step(0.5)  # no improvement, patience 0: halve
    warm["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def test_optimizer_param_groups_exempt_norms_biases_and_named_params():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.bn = torch.nn.BatchNorm2d(4)
            self.pos_embed = torch.nn.Parameter(torch.zeros(1, 4, 4))

        def no_weight_decay(self):
            return {"pos_embed"}

    model = torch.nn.Module()
    model.net = Net()
    opt = optim.make_optimizer(partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05), model)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert by_decay[0.05] == {id(model.net.conv.weight)}
    assert id(model.net.pos_embed) in by_decay[0.0] and id(model.net.bn.weight) in by_decay[0.0]
    assert not opt.defaults.get("fused")  # CPU parameters: no fused kernel requested


def test_lr_scales_split_groups_by_prefix_and_skip_frozen_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    net[1].requires_grad_(False)
    factory = partial(torch.optim.AdamW, lr=0.01, weight_decay=0.1)
    opt = optim.make_optimizer(factory, net, lr_scales={"2": 10.0, "2.bias": 0.5})
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    assert by_param[id(net[0].weight)] == (pytest.approx(0.01), 0.1)
    assert by_param[id(net[0].bias)] == (pytest.approx(0.01), 0.0)
    assert by_param[id(net[2].weight)] == (pytest.approx(0.1), 0.1)
    assert by_param[id(net[2].bias)] == (pytest.approx(0.005), 0.0)  # the longest prefix wins
    assert id(net[1].weight) not in by_param and id(net[1].bias) not in by_param
    with pytest.raises(UserError, match=r"lr scales \['1'\] name no trainable parameter"):
        optim.make_optimizer(factory, net, lr_scales={"1": 2.0})
    net.requires_grad_(False)
    with pytest.raises(UserError, match="every parameter is frozen"):
        optim.make_optimizer(factory, net)


def test_no_schedule_is_explicit_and_an_experiment_warmup_still_applies(tmp_path):
    from hylab.instantiate import build
    from tests.helpers import compose_run

    param = torch.nn.Parameter(torch.zeros(2))
    # the default experiment sets model.scheduler.warmup_epochs=2: with scheduler=none only the warm-up is left
    warm = build(compose_run(["model/scheduler=none"], tmp_path / "a").model.scheduler)
    (entry,) = warm(torch.optim.SGD([param], lr=1.0), total_steps=100, steps_per_epoch=5)
    assert entry["interval"] == "step"
    plain = build(compose_run(["model/scheduler=none", "model.scheduler.warmup_epochs=0"], tmp_path / "b").model.scheduler)
    assert plain(torch.optim.SGD([param], lr=1.0), total_steps=100, steps_per_epoch=5) == []
    opt = torch.optim.SGD([param], lr=1.0)
    assert optim.with_schedule(None, opt, None) is opt
    # a settings node without a _target_ is not a schedule (it used to reach the module as a dict)
    with pytest.raises(UserError, match=r"model.scheduler=\{'warmup_epochs': 2\} is not a schedule"):
        optim.with_schedule(None, opt, {"warmup_epochs": 2})


def test_constant_schedule_without_warmup_leaves_the_optimizer_alone():
    class Module:
        class trainer:
            estimated_stepping_batches, num_training_batches, accumulate_grad_batches, max_epochs = 20, 4, 1, 5

    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=1.0)
    assert optim.with_schedule(Module(), opt, partial(optim.constant)) is opt
    optimizers, (entry,) = optim.with_schedule(Module(), opt, partial(optim.constant, warmup_epochs=1))
    assert optimizers == [opt] and entry["interval"] == "step"
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # 4 steps per epoch: warm-up over 4 steps
