"""Maximum-likelihood refinement on the coded snapshots: its score and Fisher information, its
fixed point on noiseless data, its efficiency in the far-field special case, order selection."""

import math

import torch

from datamodules.ris.physics import RISGeometry, steering
from datamodules.ris.scenes import SceneConfig, scene_generator, simulate_scene
from lightning_modules.ris.crb import fisher_information
from lightning_modules.ris.likelihood import LikelihoodRefiner, ris_refiner
from lightning_modules.ris.music import SearchGrid
from lightning_modules.ris.settings import LikelihoodSettings

GEOMETRY = RISGeometry()
GRID_BOX = (torch.tensor([math.radians(-60), math.radians(-30), 0.1]), torch.tensor([math.radians(60), math.radians(30), 2.0]))


def scenes(count: int, sources: int, snr_db: float, seed: int = 0):
    config = SceneConfig(snr_db=(snr_db, snr_db))
    drawn = [simulate_scene(config, scene_generator(seed, "test", i), count=sources) for i in range(count)]
    y, channel, codes = (torch.stack([s[key] for s in drawn]).to(torch.complex128) for key in ("y", "H", "C"))
    truth = torch.stack([torch.stack([s["azimuth"], s["elevation"], 1 / s["range"]], -1)[:sources] for s in drawn]).double()
    return y, channel, codes, truth


def test_score_matches_finite_differences_and_the_fisher_information_is_the_crb_codes():
    refiner = ris_refiner(GEOMETRY, *GRID_BOX, LikelihoodSettings())
    y, channel, codes, truth = scenes(1, 2, 10.0)
    powers, noise = torch.tensor([[1.2, 0.8]], dtype=torch.float64), torch.tensor([0.15], dtype=torch.float64)
    point = truth + 0.01
    loglik, score, fisher = refiner.score_and_fisher(y, channel, codes, point, powers, noise)

    def value(xi):
        return refiner.loglik(y, channel, codes, xi[:6].reshape(1, 2, 3), xi[6:8].exp()[None], xi[8:].exp())[0]

    xi = torch.cat([point.flatten(), powers[0].log(), noise.log()])
    step = 1e-6
    numeric = torch.stack([(value(xi + step * e) - value(xi - step * e)) / (2 * step) for e in torch.eye(9, dtype=xi.dtype)])
    assert torch.allclose(loglik[0], value(xi), rtol=1e-12)
    assert torch.allclose(score[0], numeric, rtol=1e-5, atol=1e-4)
    # the Gauss-Newton (Fisher-scoring) step solves J delta = g: J times it is the finite-difference gradient
    delta = torch.linalg.solve(fisher[0], score[0])
    assert torch.allclose(fisher[0] @ delta, numeric, rtol=1e-5, atol=1e-4)
    # J equals crb.py's Fisher information in (theta, phi, r, p, s2), mapped to (theta, phi, 1/r, log p, log s2)
    sensing = channel[0][None] * codes[0][:, None, :]
    in_range = point[0].clone()
    in_range[:, 2] = 1 / in_range[:, 2]

    def steer(params):
        return steering(GEOMETRY.element_positions(), GEOMETRY.wavenumber, params[:, 0], params[:, 1], params[:, 2]).mT

    reference = fisher_information(steer, in_range, sensing, powers[0], float(noise))
    scale = torch.cat([torch.stack([torch.ones(2), torch.ones(2), -in_range[:, 2] ** 2], -1).flatten(), powers[0], noise])
    assert torch.allclose(fisher[0], scale[:, None] * reference * scale[None], rtol=1e-9, atol=1e-9 * float(reference.abs().max()))


def test_refinement_recovers_planted_sources_from_a_perturbed_start_on_noiseless_data():
    refiner = ris_refiner(GEOMETRY, *GRID_BOX, LikelihoodSettings(iterations=30))
    y, channel, codes, truth = scenes(6, 3, 300.0)
    start = truth + torch.tensor([0.02, -0.02, 0.05], dtype=torch.float64)  # about 1.1 deg and 1.1 deg off
    fit = refiner.fit(y, channel, codes, start, torch.full((6,), 3))
    assert (fit.positions - truth).abs().max() < 1e-6
    assert (fit.noise < 1e-6 * (y.abs() ** 2).mean((1, 2))).all()


def test_far_field_rmse_approaches_the_closed_form_crb_at_high_snr():
    """M = N, H = I, c_l = 1, a half-wavelength ULA, one source: the coded model is L i.i.d. ULA
    snapshots, whose CRB is closed form, CRB(theta) = s2 / (2L) / Re[(d^H P_a^perp d) (p^2 a^H R^-1 a)]."""
    elements, snapshots, trials, theta, snr_db = 8, 32, 200, 0.3, 10.0
    noise = 10 ** (-snr_db / 10)
    index = torch.arange(elements, dtype=torch.float64)

    def steer(params):
        phase = math.pi * index[None, :] * torch.sin(params[:, :1])
        return torch.polar(torch.ones_like(phase), phase)

    generator = torch.Generator().manual_seed(0)
    a = steer(torch.tensor([[theta]], dtype=torch.float64))[0]
    signal = torch.randn(trials, snapshots, 1, dtype=torch.complex128, generator=generator)
    y = signal * a + math.sqrt(noise) * torch.randn(trials, snapshots, elements, dtype=torch.complex128, generator=generator)
    channel = torch.eye(elements, dtype=torch.complex128).expand(trials, -1, -1)
    codes = torch.ones(trials, snapshots, elements, dtype=torch.complex128)
    refiner = LikelihoodRefiner(steer, torch.tensor([-1.2]), torch.tensor([1.2]), iterations=15, chunk=1 << 16)
    start = torch.full((trials, 1, 1), theta + 0.05, dtype=torch.float64)
    fit = refiner.fit(y, channel, codes, start, torch.ones(trials, dtype=torch.long))
    rmse = float(((fit.positions[:, 0, 0] - theta) ** 2).mean().sqrt())

    d = 1j * math.pi * index * math.cos(theta) * a
    perp = torch.eye(elements) - torch.outer(a, a.conj()) / elements
    cov = torch.outer(a, a.conj()) + noise * torch.eye(elements)
    inner = ((d.conj() @ perp @ d) * (a.conj() @ torch.linalg.solve(cov, a))).real
    closed_form = math.sqrt(noise / (2 * snapshots) / float(inner))
    ours = fisher_information(lambda p: steer(p).mT, torch.tensor([[theta]], dtype=torch.float64),
                              channel[0].expand(snapshots, -1, -1), torch.ones(1), noise)
    assert math.isclose(float(torch.linalg.inv(ours)[0, 0]), closed_form**2, rel_tol=1e-9)
    assert 0.85 < rmse / closed_form < 1.2, (rmse, closed_form)


def test_the_information_criterion_counts_sources_and_true_k_fits_them():
    from lightning_modules.ris.likelihood import likelihood_grid, refine_scenes

    refiner = ris_refiner(GEOMETRY, *GRID_BOX, LikelihoodSettings(iterations=15))
    y, channel, codes, truth = scenes(3, 2, 15.0, seed=3)
    grid = likelihood_grid(SearchGrid(), 12.0, 5)
    pool = grid[None].expand(3, -1, -1)
    results = refine_scenes(refiner, y, channel, codes, pool, 4,
                            {"truth": torch.full((3,), 2), "bic": 1.5 * math.log(y.shape[1] * y.shape[2])})
    for estimates, count in results.values():
        assert (count == 2).all()
        found = torch.cat([estimates[..., :2], 1 / estimates[..., 2:]], -1)[:, :2].double()
        error = (found[:, :, None, :2] - truth[:, None, :, :2]).abs().amax(-1).amin(-1)  # each to its nearest
        assert error.max() < math.radians(1.0)


def test_two_starts_at_one_point_do_not_stop_the_fit():
    refiner = ris_refiner(GEOMETRY, *GRID_BOX, LikelihoodSettings(iterations=3))
    y, channel, codes, truth = scenes(2, 2, 10.0)
    start = truth[:, :1].repeat(1, 2, 1)  # a pool can hold the same peak twice
    fit = refiner.fit(y, channel, codes, start, torch.full((2,), 2))
    assert torch.isfinite(fit.loglik).all() and torch.isfinite(fit.positions).all()
