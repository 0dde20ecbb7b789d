"""SAM / ASAM, Lookahead and gradient centralization against their update rules, and SAM's
manual step inside the module (really active, BatchNorm statistics updated once)."""

import pytest
import torch
from torch import nn

from lightning_modules.hybrid.optimizers import SAM, GradientCentralization, Lookahead


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    return model, lambda: ((model(x) - y) ** 2).mean()


def sam_step(rho, adaptive=False):
    model, loss_fn = problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sam = SAM(model.parameters(), rho, adaptive)
    start = [p.detach().clone() for p in model.parameters()]
    loss_fn().backward()
    first_grads = [p.grad.clone() for p in model.parameters()]
    sam.ascend()
    ascended = [p.detach().clone() for p in model.parameters()]
    opt.zero_grad()
    loss_fn().backward()
    sam.restore()
    restored = [p.detach().clone() for p in model.parameters()]
    opt.step()
    return start, first_grads, ascended, restored, [p.detach().clone() for p in model.parameters()]


def test_sam_ascends_rho_along_the_normalized_gradient_and_steps_from_w():
    start, grads, ascended, restored, _ = sam_step(0.05)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    for w, g, a, r in zip(start, grads, ascended, restored):
        torch.testing.assert_close(a, w + 0.05 * g / norm)
        torch.testing.assert_close(r, w)


def test_asam_scales_the_ascent_by_the_weights():
    start, grads, ascended, _, _ = sam_step(0.5, adaptive=True)
    norm = torch.sqrt(sum(((w.abs() * g) ** 2).sum() for w, g in zip(start, grads)))
    for w, g, a in zip(start, grads, ascended):
        torch.testing.assert_close(a, w + 0.5 * w.abs() ** 2 * g / norm)


def test_sam_is_active_and_rho_zero_is_the_base_step():
    base_model, loss_fn = problem()
    opt = torch.optim.SGD(base_model.parameters(), lr=0.1)
    loss_fn().backward()
    opt.step()
    base = [p.detach() for p in base_model.parameters()]
    sam_final = sam_step(0.05)[-1]
    zero_final = sam_step(0.0)[-1]
    assert any(not torch.allclose(a, b) for a, b in zip(sam_final, base))
    for a, b in zip(zero_final, base):
        torch.testing.assert_close(a, b)


def test_gradient_centralization_removes_the_row_mean_and_skips_vectors():
    model, loss_fn = problem()
    opt = GradientCentralization(torch.optim.SGD(model.parameters(), lr=1.0))
    loss_fn().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    for w0, g, p in zip(before, grads, model.parameters()):
        expected = g - g.mean(dim=1, keepdim=True) if g.ndim > 1 else g
        torch.testing.assert_close(w0 - p.detach(), expected)


def test_lookahead_interpolates_after_k_fast_steps_from_the_initial_weights():
    model, loss_fn = problem()
    fast_model, _ = problem()
    fast_model.load_state_dict(model.state_dict())
    phi0 = [p.detach().clone() for p in model.parameters()]
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1), k=5, alpha=0.5)
    plain = torch.optim.SGD(fast_model.parameters(), lr=0.1)
    x = torch.randn(16, 4)
    for step in range(5):
        for m, o in ((model, opt), (fast_model, plain)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
        if step < 4:
            for a, b in zip(model.parameters(), fast_model.parameters()):
                torch.testing.assert_close(a, b)  # fast steps are the base optimizer's
    for p, theta, phi in zip(model.parameters(), fast_model.parameters(), phi0):
        torch.testing.assert_close(p.detach(), phi + 0.5 * (theta.detach() - phi))  # the first cycle already counts


def test_lookahead_shares_param_groups_so_schedules_reach_the_base_and_state_round_trips():
    model, loss_fn = problem()
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    opt = Lookahead(GradientCentralization(base), k=2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5)
    assert base.param_groups[0]["lr"] == pytest.approx(5e-4)
    for _ in range(3):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        scheduler.step()
    state = opt.state_dict()
    again = Lookahead(GradientCentralization(torch.optim.AdamW(model.parameters(), lr=1e-3)), k=2)
    again.load_state_dict(state)
    assert again.fast_steps == 3 and all(torch.equal(a, b) for a, b in zip(again.slow[0], opt.slow[0]))


def test_frozen_batchnorm_leaves_running_statistics_alone():
    from lightning_modules.hybrid.module import frozen_batchnorm_stats

    bn = nn.BatchNorm1d(3)
    bn(torch.randn(8, 3))
    mean, count = bn.running_mean.clone(), bn.num_batches_tracked.clone()
    with frozen_batchnorm_stats(bn):
        bn(torch.randn(8, 3) + 5)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.num_batches_tracked, count) and bn.momentum == 0.1


def sam_by_hand(module, batches, epochs, rho, total_steps):
    """SAM(AdamW) with the warm-up cosine schedule, written out step by step in plain torch."""
    import torch.nn.functional as F

    from lightning_modules.hybrid.module import frozen_batchnorm_stats
    from lightning_modules.optim import cosine, make_optimizer

    opt = make_optimizer(module.optimizer_factory, module)
    schedule = cosine(opt, total_steps=total_steps, steps_per_epoch=len(batches), warmup_epochs=1, min_lr_ratio=0.01)[0]["scheduler"]
    sam, lrs = SAM(module.parameters(), rho), []
    module.train()
    for _ in range(epochs):
        for x, y in batches:
            lrs.append(opt.param_groups[0]["lr"])
            opt.zero_grad()
            F.cross_entropy(module.net(x), y, label_smoothing=0.1).backward()
            sam.ascend()
            opt.zero_grad()
            with frozen_batchnorm_stats(module.net):
                F.cross_entropy(module.net(x), y, label_smoothing=0.1).backward()
            sam.restore()
            opt.step()
            schedule.step()
    return lrs


@pytest.mark.slow
def test_sam_through_lightning_equals_sam_by_hand_with_the_schedule_and_batchnorm_counted_once(tmp_path):
    """The module's manual-optimization SAM over several steps with AdamW and a warm-up cosine
    schedule lands on the same weights, BatchNorm statistics and per-step lr as the hand-written
    SAM loop: no step or schedule counted twice, the update uses pass 2's gradient."""
    import copy
    from functools import partial

    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_modules.hybrid.module import HybridClassifier
    from lightning_modules.optim import cosine
    from tests.hybrid.conftest import tiny

    torch.manual_seed(0)
    net = tiny(mode="cnn", cbam=True)  # CBAM brings BatchNorm layers
    module = HybridClassifier(net, partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.05), partial(cosine, warmup_epochs=1, min_lr_ratio=0.01),
                              label_smoothing=0.1, optimization={"sam": {"enabled": True, "rho": 0.05}})
    reference = copy.deepcopy(module)
    x, y = torch.randn(16, 1, 28, 28), torch.arange(16) % 10
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[RecordLR()], default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8))
    hand_lrs = sam_by_hand(reference, [(x[:8], y[:8]), (x[8:], y[8:])], epochs=2, rho=0.05, total_steps=4)
    assert trainer.global_step == 4 and lrs == pytest.approx(hand_lrs) and len(set(hand_lrs)) > 2
    for a, b in zip(module.net.state_dict().values(), reference.net.state_dict().values()):
        torch.testing.assert_close(a, b)  # parameters and BatchNorm running statistics
    bn = next(m for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert int(bn.num_batches_tracked) == 4
