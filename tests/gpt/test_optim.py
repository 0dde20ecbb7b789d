"""Muon + AdamW stepped as one optimizer, and the warm-up / warm-down schedule."""

import copy
from functools import partial

import pytest
import torch

from hylab.errors import UserError
from lightning_modules.gpt.losses import next_token_loss
from lightning_modules.gpt.nets import GPT, GPTConfig
from lightning_modules.gpt.optim import CombinedOptimizer, build_gpt_optimizer, gpt_parameter_roles, warmdown_factor, warmup_warmdown

MUON = partial(torch.optim.Muon, lr=0.02, weight_decay=0.0)
ADAMW = partial(torch.optim.AdamW, lr=0.3, betas=(0.8, 0.95), eps=1e-10, weight_decay=0.0)


def make_net() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=50, sequence_len=8, n_layer=2, n_head=2, n_embd=16))


def train_steps(net: GPT, optimizer: torch.optim.Optimizer, steps: int) -> None:
    torch.manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, 50, (4, 9))
        next_token_loss(net(x[:, :-1]), x[:, 1:]).backward()
        optimizer.step()
        optimizer.zero_grad()


def test_roles_split_every_parameter_once_and_lrs_are_separate():
    net = make_net()
    roles = gpt_parameter_roles(net)
    ids = [id(p) for group in roles.values() for p in group]
    assert len(ids) == len(set(ids)) == len(list(net.parameters()))
    optimizer = build_gpt_optimizer(net, MUON, ADAMW, head_lr=0.004)
    muon, adamw = optimizer.optimizers["matrix"], optimizer.optimizers["embedding_head"]
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert {id(p) for p in muon.param_groups[0]["params"]} == {id(p) for p in roles["matrix"]}
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 0.3, 0.004]
    assert optimizer.param_groups[1] is adamw.param_groups[0]  # shared, so schedules reach them


def test_combined_step_equals_stepping_each_optimizer():
    net_a, net_b = make_net(), make_net()
    train_steps(net_a, build_gpt_optimizer(net_a, MUON, ADAMW, 0.004), 3)
    roles = gpt_parameter_roles(net_b)
    separate = [MUON(roles["matrix"]), ADAMW([{"params": roles["embedding"]}, {"params": roles["head"], "lr": 0.004}])]

    class Both:
        def step(self):
            for o in separate:
                o.step()

        def zero_grad(self):
            for o in separate:
                o.zero_grad()

    train_steps(net_b, Both(), 3)
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(a, b)


def test_state_dict_round_trip_resumes_identically():
    net = make_net()
    optimizer = build_gpt_optimizer(net, MUON, ADAMW, 0.004)
    train_steps(net, optimizer, 2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    saved = copy.deepcopy(optimizer.state_dict())  # state_dict() holds live tensors
    train_steps(net, optimizer, 2)
    expected = [p.clone() for p in net.parameters()]

    net2 = make_net()
    net2.load_state_dict(state)
    optimizer2 = build_gpt_optimizer(net2, MUON, ADAMW, 0.004)
    optimizer2.load_state_dict(saved)
    assert optimizer2.param_groups[0] is optimizer2.optimizers["matrix"].param_groups[0]
    train_steps(net2, optimizer2, 2)
    for a, b in zip(expected, net2.parameters()):
        assert torch.allclose(a, b)
    with pytest.raises(UserError, match="optimizer holds"):
        optimizer2.load_state_dict({"matrix": saved["matrix"]})


def test_muon_refuses_flat_parameters():
    net = make_net()
    net.blocks[0].attn.c_q.weight = torch.nn.Parameter(net.blocks[0].attn.c_q.weight.detach().flatten())
    with pytest.raises(UserError, match="Muon takes 2-D matrices only"):
        build_gpt_optimizer(net, MUON, ADAMW, 0.004)


def test_warmdown_shape():
    values = [warmdown_factor(t, 100, 0.4, 0.1) for t in range(101)]
    assert values[0] == values[60] == 1.0
    assert values[80] == pytest.approx(1 - 0.5 * 0.9)
    assert values[100] == pytest.approx(0.1)


def test_schedule_scales_both_inner_optimizers():
    net = make_net()
    optimizer = build_gpt_optimizer(net, MUON, ADAMW, 0.004)
    scheduler = warmup_warmdown(optimizer, total_steps=10, steps_per_epoch=10, warmup_steps=2, warmdown_ratio=0.5)[0]["scheduler"]
    assert isinstance(optimizer, CombinedOptimizer)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.optimizers["matrix"].param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.02)  # warm-up
    assert lrs[4] == pytest.approx(0.02) and lrs[8] == pytest.approx(0.02 * 0.4)  # warm-down
    assert optimizer.optimizers["embedding_head"].param_groups[1]["lr"] == pytest.approx(0.004 * 0.0)
