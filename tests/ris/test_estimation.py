"""Near-field MUSIC, source counting, matching metrics and the Cramer-Rao bound."""

import math

import pytest
import torch

from datamodules.ris.physics import RISGeometry, ridge_backprojection, sample_covariance, steering
from datamodules.ris.scenes import SceneConfig, scene_generator, simulate_scene
from lightning_modules.ris.crb import fisher_information, position_crb
from lightning_modules.ris.metrics import match_sources
from lightning_modules.ris.music import NearFieldMusic, SearchGrid, information_criteria

GEOMETRY = RISGeometry()
PLANTED = torch.tensor([[0.31, 0.12, 1.3], [-0.52, -0.21, 4.0], [0.87, 0.33, 0.8]])  # off the 3-deg grid


def planted_snapshots(snapshots: int, dtype=torch.complex128) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    a = steering(GEOMETRY.element_positions(), GEOMETRY.wavenumber, *PLANTED.double().T)  # (K, N)
    signals = torch.randn(snapshots, 3, dtype=dtype, generator=generator)
    return (signals @ a).to(dtype)  # (L, N): x_l = A s_l, no noise


def test_music_recovers_planted_sources_from_noiseless_snapshots_to_newton_precision():
    music = NearFieldMusic(GEOMETRY)
    cov = sample_covariance(planted_snapshots(64))[None].to(torch.complex64)
    estimate = music.estimate(cov, torch.tensor([3]), 3)[0]
    order = estimate[:, 0].argsort()
    truth = PLANTED[PLANTED[:, 0].argsort()]
    assert torch.allclose(estimate[order, :2], truth[:, :2], atol=1e-4)  # radians; the grid step is 0.052
    assert torch.allclose(estimate[order, 2], truth[:, 2], rtol=1e-3)
    coarse = NearFieldMusic(GEOMETRY, newton_steps=0).estimate(cov, torch.tensor([3]), 3)[0]
    assert (coarse[coarse[:, 0].argsort(), :2] - truth[:, :2]).abs().max() > 1e-3  # the refinement did the work


def test_music_on_noiseless_coded_snapshots_is_close_with_many_snapshots():
    """Through the RIS: 16 antennas see 144 elements, so each snapshot is a random projection and
    R_samp only approaches (a multiple of) the source covariance plus a multiple of I as L grows."""
    config = SceneConfig(snapshots=400, snr_db=(300.0, 300.0))
    scene = simulate_scene(config, scene_generator(1, "test", 0), count=3)
    cov = sample_covariance(ridge_backprojection(scene["y"], scene["H"], scene["C"], 1e-3))
    estimate = NearFieldMusic(GEOMETRY).estimate(cov[None], torch.tensor([3]), 3)
    truth = torch.stack([scene["azimuth"], scene["elevation"], scene["range"]], -1)[None, :3]
    errors = match_sources(estimate, torch.tensor([3]), truth, torch.tensor([3])).summary()
    assert errors["rmse_deg"] < 0.5 and errors["rmse_m"] < 0.5


def test_music_spectrum_peaks_at_a_source_and_batching_changes_nothing():
    music = NearFieldMusic(GEOMETRY, SearchGrid(azimuth_step_deg=6.0, elevation_step_deg=6.0, inverse_range_points=5))
    snapshots = planted_snapshots(32)
    covs = torch.stack([sample_covariance(snapshots), sample_covariance(snapshots.flip(0) * 2.0 + 0.1)]).to(torch.complex64)
    spectrum = music.spectrum(covs, torch.tensor([3, 3]))
    assert spectrum.shape == (2, *music.grid_shape()) and (spectrum > 0).all()
    assert torch.allclose(spectrum[1:], music.spectrum(covs[1:], torch.tensor([3])), rtol=1e-4)
    azimuth, elevation, _ = music.grid.axes()
    a, e, _ = torch.unravel_index(spectrum[0].argmax(), spectrum.shape[1:])
    peak = torch.tensor([azimuth[a], elevation[e]], dtype=torch.float32)
    assert (PLANTED[:, :2] - peak).abs().max(-1).values.min() < math.radians(6.0)


def test_information_criteria_count_clear_eigenvalue_gaps():
    signal = torch.tensor([50.0, 30.0, 10.0])
    eigvals = torch.cat([signal, 1.0 + 0.01 * torch.randn(12, generator=torch.Generator().manual_seed(0))])
    counts = information_criteria(eigvals.sort(descending=True).values[None], snapshots=16, k_max=5)
    assert counts["mdl"].item() == 3 and counts["aic"].item() == 3


def test_matching_pairs_sources_optimally_and_ignores_padding():
    truth = torch.tensor([[[0.1, 0.0, 2.0], [0.5, 0.1, 5.0], [0.0, 0.0, 1.0]]])
    estimate = torch.tensor([[[0.5 + math.radians(1.0), 0.1, 5.5], [0.1, 0.0, 2.0], [9.0, 9.0, 9.0]]])
    errors = match_sources(estimate, torch.tensor([2]), truth, torch.tensor([2]))
    summary = errors.summary()
    assert summary["rmse_deg"] == pytest.approx(math.sqrt(1.0 / 2), rel=1e-5)  # errors 1 deg and 0 deg
    assert summary["rmse_m"] == pytest.approx(math.sqrt(0.25 / 2), rel=1e-5) and summary["k_acc"] == 1.0
    fewer = match_sources(estimate, torch.tensor([1]), truth, torch.tensor([2]))
    assert len(fewer.range_sq_m) == 1 and fewer.summary()["k_acc"] == 0.0


def ula_steering(elements: int):
    def steer(params):
        phase = math.pi * torch.arange(elements, dtype=params.dtype)[:, None] * torch.sin(params[:, 0])[None, :]
        return torch.polar(torch.ones_like(phase), phase)

    return steer


def test_crb_reduces_to_the_stochastic_ula_crb():
    """Degenerate case: M = N, H = I, all codes 1, far field, one angle per source. Then the coded
    model is L i.i.d. snapshots of a ULA, whose stochastic CRB is (Stoica & Nehorai 1990)
        CRB(theta) = s2 / (2L) {Re[(D^H P_A^perp D) o (P A^H R^-1 A P)^T]}^-1."""
    elements, snapshots, noise = 8, 50, 0.5
    theta = torch.tensor([[0.2], [-0.4]], dtype=torch.float64)
    x = torch.randn(2, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    powers = x @ x.mH + torch.eye(2)
    sensing = torch.eye(elements, dtype=torch.complex128).expand(snapshots, -1, -1)
    steer = ula_steering(elements)
    ours = position_crb(fisher_information(steer, theta, sensing, powers, noise, "full"), 2, 1)[:, 0]

    a = steer(theta)
    d = 1j * math.pi * torch.arange(elements, dtype=torch.float64)[:, None] * torch.cos(theta[:, 0])[None, :] * a
    r = a @ powers @ a.mH + noise * torch.eye(elements)
    perp = torch.eye(elements) - a @ torch.linalg.solve(a.mH @ a, a.mH)
    inner = ((d.mH @ perp @ d) * (powers @ a.mH @ torch.linalg.solve(r, a) @ powers).T).real
    closed_form = noise / (2 * snapshots) * torch.linalg.inv(inner).diagonal()
    assert torch.allclose(ours, closed_form, rtol=1e-9)
    # knowing the sources are uncorrelated can only tighten the bound
    uncorrelated = torch.tensor([2.0, 1.0], dtype=torch.float64)
    full = position_crb(fisher_information(steer, theta, sensing, torch.diag(uncorrelated), noise, "full"), 2, 1)
    diagonal = position_crb(fisher_information(steer, theta, sensing, uncorrelated, noise, "diagonal"), 2, 1)
    assert (diagonal <= full * (1 + 1e-9)).all()


def test_ris_crb_falls_with_snr_and_grows_with_range():
    config = SceneConfig()
    scene = simulate_scene(config, scene_generator(0, "test", 1), count=2)
    sensing = scene["H"][None] * scene["C"][:, None, :]  # G_l = H diag(c_l)
    positions = GEOMETRY.element_positions()

    def steer(params):
        return steering(positions, GEOMETRY.wavenumber, params[:, 0], params[:, 1], params[:, 2]).mT

    def bound(params, snr_db):
        fisher = fisher_information(steer, params, sensing, torch.ones(2), 10 ** (-snr_db / 10))
        return position_crb(fisher, 2, 3)

    near = torch.tensor([[0.3, 0.1, 1.0], [-0.4, -0.2, 2.0]], dtype=torch.float64)
    low, high = bound(near, 0.0), bound(near, 20.0)
    assert (low > 0).all() and (high < low).all()
    assert torch.allclose(low[:, :2] / high[:, :2], torch.full((2, 2), 100.0, dtype=torch.float64), rtol=0.5)  # ~1/SNR
    far = near.clone()
    far[:, 2] *= 4
    assert (bound(far, 10.0)[:, 2] > bound(near, 10.0)[:, 2]).all()
