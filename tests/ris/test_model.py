"""The hybrid covariance, the losses, the beamspace net, the module's wiring and the callback."""

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from callbacks.non_finite_guard import NonFiniteGuard, NonFiniteGradientsError
from lightning_modules.ris.callbacks import covariance_statistics, spectrum_figure
from datamodules.loaders import batch_as_is
from datamodules.ris.datamodule import SimulatedScenes
from datamodules.ris.physics import RISGeometry, as_complex, steering
from datamodules.ris.scenes import SceneConfig
from lightning_modules.ris.nets import RISBeamspaceNet
from lightning_modules.optim import cosine
from lightning_modules.ris.module import RISLocalizer
from lightning_modules.ris.covariance import blend_covariances, hybrid_covariance, top_eigen_inverse
from lightning_modules.ris.losses import count_loss, eigengap_loss, heatmap_loss, nmse_loss, subspace_loss

GEOMETRY = RISGeometry()
SMALL_GRID = {"azimuth_step_deg": 10.0, "elevation_step_deg": 10.0, "inverse_range_points": 4, "newton_steps": 2}


def batch_of(count: int, seed: int = 0, snr_db: float | None = None) -> dict:
    return SimulatedScenes(SceneConfig(), seed, "val", count, snr_db).__getitems__(range(count))


def small_net(**kwargs) -> RISBeamspaceNet:
    return RISBeamspaceNet(geometry=GEOMETRY, angle_step_deg=15.0, inverse_range_bins=3, channels=8, blocks=1, **kwargs)


def small_module(net=None, **kwargs) -> RISLocalizer:
    optimizer = partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.01)
    return RISLocalizer(net=net, optimizer=optimizer, music=SMALL_GRID, **kwargs)


def test_top_eigen_inverse_gives_the_signal_projector_with_finite_gradients():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(2, 12, 5, dtype=torch.complex128, generator=generator, requires_grad=True)
    count = torch.tensor([2, 3])

    def via_gram(w):
        inverse, _ = top_eigen_inverse(w.mH @ w, count)
        return w @ inverse @ w.mH

    eigvecs = torch.linalg.eigh(w.detach() @ w.detach().mH).eigenvectors.flip(-1)
    for b, k in enumerate(count.tolist()):
        reference = eigvecs[b, :, :k] @ eigvecs[b, :, :k].mH
        assert torch.allclose(via_gram(w)[b], reference, atol=1e-10)
    probe = torch.randn(12, dtype=torch.complex128, generator=generator)
    assert torch.autograd.gradcheck(lambda w: (probe.conj() @ via_gram(w) @ probe).real.sum(), (w,))
    # zero columns make eigenvalues equal, where torch.linalg.eigh's own backward gives NaN
    degenerate = torch.cat([w.detach()[..., :3], torch.zeros(2, 12, 2, dtype=torch.complex128)], -1).requires_grad_()
    (probe.conj() @ via_gram(degenerate) @ probe).real.sum().backward()
    assert torch.isfinite(torch.view_as_real(degenerate.grad)).all()


def test_blend_is_hermitian_trace_normalized_loaded_and_matches_its_factor():
    batch = batch_of(3)
    factors = torch.randn(3, 144, 5, dtype=torch.complex64)
    for beta in (0.0, 0.3, 1.0):
        cov = hybrid_covariance(batch, factors, beta, 1.0, 1e-3)
        assert torch.allclose(cov.blend, cov.blend.mH)
        assert torch.allclose(cov.blend.diagonal(dim1=-2, dim2=-1).sum(-1).real, torch.full((3,), 144 * (1 + 1e-3)), rtol=1e-5)
        eye = torch.eye(144, dtype=cov.blend.dtype)
        assert torch.allclose(cov.factor @ cov.factor.mH + 1e-3 * eye, cov.blend, atol=1e-4)
        assert torch.allclose(cov.blend, blend_covariances(cov.pred, cov.sample, beta, 1e-3))
    pure = hybrid_covariance(batch, factors, 0.0, 1.0, 0.0)
    assert torch.allclose(pure.blend, pure.pred)
    sample_only = hybrid_covariance(batch, None, 0.5, 1.0, 0.0)
    assert sample_only.pred is None and sample_only.beta == 1.0 and torch.allclose(sample_only.blend, sample_only.sample)


def test_the_sample_part_of_the_blend_carries_no_gradient():
    batch = batch_of(2)
    factors = torch.randn(2, 144, 5, dtype=torch.complex64, requires_grad=True)
    cov = hybrid_covariance(batch, factors, 0.4, 1.0, 1e-3)
    assert not cov.sample.requires_grad and cov.blend.requires_grad


def test_losses_match_their_formulas():
    batch = batch_of(4, snr_db=10.0)
    r_true = as_complex(batch["R_true"])
    truth = steering(GEOMETRY.element_positions(torch.float32), GEOMETRY.wavenumber, batch["azimuth"], batch["elevation"], batch["range"])
    assert nmse_loss(r_true, r_true).item() == pytest.approx(0.0, abs=1e-10)
    assert nmse_loss(torch.zeros_like(r_true), r_true).item() == pytest.approx(1.0)
    present = torch.arange(5)[None] < batch["k"][:, None]
    # factors = the true steering vectors: the signal subspace holds every source exactly
    exact = hybrid_covariance(batch, truth.mT * present[:, None, :], 0.0, 1.0, 1e-3)
    from lightning_modules.ris.covariance import blend_spectrum

    inverse, eigvals = blend_spectrum(exact, batch["k"], 6)
    assert subspace_loss(exact.factor, inverse, truth, present).item() == pytest.approx(0.0, abs=1e-4)
    assert eigengap_loss(eigvals, batch["k"]).item() < 1e-3
    assert nmse_loss(exact.pred, r_true).item() < 1e-8
    eigvals = torch.tensor([[4.0, 2.0, 1.0, 0.5]])
    assert eigengap_loss(eigvals, torch.tensor([2])).item() == pytest.approx(0.5)
    logits = torch.tensor([[0.0, 10.0, 0.0]])
    assert count_loss(logits, torch.tensor([2])).item() == pytest.approx(-torch.log_softmax(logits, -1)[0, 1].item())


def test_heatmap_loss_is_small_for_the_right_map_and_large_for_a_wrong_one():
    net = small_net()
    batch = batch_of(2)
    present = torch.arange(5)[None] < batch["k"][:, None]
    cells, offsets = net.cells_of(batch["azimuth"], batch["elevation"], batch["range"])
    shape = (2, *net.grid_shape)
    right = torch.full(shape, -12.0)
    for b in range(2):
        for k in range(int(batch["k"][b])):
            right[(b, *cells[b, k].tolist())] = 12.0
    offset_map = torch.zeros(*shape, 3)
    for b in range(2):
        for k in range(int(batch["k"][b])):
            offset_map[(b, *cells[b, k].tolist())] = offsets[b, k]
    good = heatmap_loss(right, offset_map, cells, offsets, present)
    bad = heatmap_loss(-right, torch.zeros_like(offset_map), cells, offsets, present)
    assert good.item() < 1e-3 and bad.item() > 10.0


def test_net_emits_steering_factors_on_the_manifold():
    net = small_net()
    batch = batch_of(3)
    out = net(batch["y"], batch["H"], batch["C"])
    assert out["factors"].shape == (3, 144, 5) and out["count_logits"].shape == (3, 5)
    assert out["positions"].shape == (3, 5, 3) and out["heat"].shape == (3, *net.grid_shape)
    amplitude = out["factors"].abs()
    assert torch.allclose(amplitude, amplitude[:, :1, :].expand_as(amplitude), rtol=1e-5)  # |a_n| equal for all n
    az, el, r = out["positions"].unbind(-1)
    rebuilt = steering(net.element_positions, GEOMETRY.wavenumber, az, el, r).mT * amplitude[:, :1, :]
    assert torch.allclose(rebuilt, out["factors"], atol=1e-4)
    cells, offsets = net.cells_of(az, el, r)
    grid = torch.stack([axis[cells[..., i]] for i, axis in enumerate(net.axes)], -1)
    back = grid + offsets * net.steps
    assert torch.allclose(back[..., :2], out["positions"][..., :2], atol=1e-5)


def test_training_and_inference_build_the_same_blend():
    torch.manual_seed(0)
    module = small_module(small_net(), beta=0.3).eval()
    batch = batch_of(4)
    trained = module.training_step(batch, 0)["covariance"]
    inferred = module.localize(batch)["covariance"]
    assert torch.equal(trained.blend, inferred.blend) and torch.equal(trained.pred, inferred.pred)


def test_head_learning_rate_is_a_multiple_of_the_backbone_one():
    module = small_module(small_net(), head_lr_multiplier=4.0)
    module.scheduler_factory = None
    optimizer = module.configure_optimizers()
    heads = {id(p) for name, p in module.net.named_parameters() if "head" in name}
    for group in optimizer.param_groups:
        is_head = {id(p) in heads for p in group["params"]}
        assert len(is_head) == 1  # no group mixes head and backbone
        assert group["lr"] == pytest.approx(4e-3 if is_head.pop() else 1e-3)
    scheduler = cosine(optimizer, total_steps=10, steps_per_epoch=5, warmup_epochs=0)[0]["scheduler"]
    assert sorted({round(lr, 9) for lr in scheduler.get_last_lr()}) == [1e-3, 4e-3]


def test_config_errors_are_one_line_user_errors():
    from hylab.errors import UserError

    with pytest.raises(UserError, match="model.beta"):
        small_module(small_net(), beta=1.5)
    with pytest.raises(UserError, match="model.k_from"):
        small_module(None, k_from="head")
    with pytest.raises(UserError, match="loss_weights"):
        small_module(small_net(), loss_weights={"nmsee": 1.0})
    with pytest.raises(UserError, match="ridge_k"):
        small_module(small_net(ridge_k=2.0), ridge_k=1.0)


def test_non_finite_guard_covers_this_family(tmp_path):
    """The foundation's NonFiniteGuard (in the default callbacks) skips RIS steps whose
    gradients are NaN and stops the run when they keep coming."""
    from tests.helpers import compose_run

    cfg = compose_run(["experiment=ris_hybrid"], tmp_path)
    assert cfg.callbacks.non_finite_guard._target_ == "callbacks.non_finite_guard.NonFiniteGuard"
    batch = batch_of(4)
    poisoned = dict(batch, y=torch.full_like(batch["y"], float("nan")))
    loader = DataLoader([poisoned] * 6, batch_size=None, collate_fn=batch_as_is)
    module, guard = small_module(small_net()), NonFiniteGuard(max_consecutive=3)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    trainer = L.Trainer(max_steps=6, callbacks=[guard], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", limit_val_batches=0)
    with pytest.raises(NonFiniteGradientsError, match="3 optimizer steps in a row"):
        trainer.fit(module, loader)
    assert guard.skipped_total == 3
    assert all(torch.equal(before[name], p) for name, p in module.named_parameters())


def test_covariance_statistics_and_spectrum_figure():
    batch = batch_of(2, snr_db=10.0)
    truth = steering(GEOMETRY.element_positions(torch.float32), GEOMETRY.wavenumber, batch["azimuth"], batch["elevation"], batch["range"])
    present = torch.arange(5)[None] < batch["k"][:, None]
    cov = hybrid_covariance(batch, truth.mT * present[:, None, :], 0.25, 1.0, 1e-3)
    stats = covariance_statistics(cov, batch["k"])
    assert stats["beta"] == 0.25
    assert stats["tr_pred"] == pytest.approx(144.0, rel=1e-5) and stats["tr_samp"] == pytest.approx(144.0, rel=1e-5)
    assert stats["tr_blend"] == pytest.approx(144.0 * 1.001, rel=1e-5)
    expected_rank = float(batch["k"].float().mean())
    assert stats["rank_pred"] == pytest.approx(expected_rank)
    assert stats["rank_samp"] == 15.0  # L - 1 after centring
    assert 0.75 <= stats["topk_energy_blend"] <= 1.0  # at least the 1 - beta share of R_pred
    diff = torch.linalg.matrix_norm(cov.blend - cov.pred).mean().item()
    assert stats["fro_blend_minus_pred"] == pytest.approx(diff, rel=1e-5)
    module = small_module()
    spectrum = module.music.spectrum(cov.blend[:1], batch["k"][:1])[0]
    figure = spectrum_figure(spectrum, module.music.grid.axes(), torch.stack([batch["azimuth"][0], batch["elevation"][0], batch["range"][0]], -1), int(batch["k"][0]))
    assert len(figure.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(figure)
    assert math.isfinite(stats["fro_blend"])
