"""The RIS measurement model against hand-computed values and its defining properties."""

import math

import pytest
import torch

from datamodules.ris.physics import (
    RISGeometry,
    as_complex,
    as_real,
    bs_ris_channel,
    coded_snapshots,
    path_difference,
    random_codes,
    ridge_backprojection,
    sample_covariance,
    source_covariance,
    steering,
)
from datamodules.ris.scenes import SceneConfig, network_batch, scene_generator, simulate_scene, stack_scenes

GEOMETRY = RISGeometry()


def test_element_grid_is_centred_half_wavelength_12_by_12():
    positions = GEOMETRY.element_positions()
    assert positions.shape == (144, 3) and GEOMETRY.element_spacing == pytest.approx(0.15)
    assert torch.allclose(positions.mean(0), torch.zeros(3, dtype=positions.dtype), atol=1e-12)
    assert positions[0].tolist() == pytest.approx([0.0, -0.825, -0.825])  # 5.5 * 0.15
    assert positions[1, 1] - positions[0, 1] == pytest.approx(0.15)  # y varies fastest


def test_steering_phase_at_a_known_point():
    # Source on boresight at 2 m; corner element (0, -0.825, -0.825):
    # d = sqrt(2^2 + 0.825^2 + 0.825^2) = sqrt(5.36125), phase = -2 pi / 0.3 * (d - 2).
    a = steering(GEOMETRY.element_positions(), GEOMETRY.wavenumber, torch.tensor(0.0, dtype=torch.float64),
                 torch.tensor(0.0, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    expected = -2 * math.pi / 0.3 * (math.sqrt(5.36125) - 2.0)
    assert torch.angle(a[0]).item() == pytest.approx(math.remainder(expected, 2 * math.pi), abs=1e-9)
    assert torch.allclose(a.abs(), torch.ones(144, dtype=torch.float64))
    # a source at azimuth 30 deg, elevation 0, 1 m away, seen from the element at y = +0.075, z = +0.075
    source = torch.tensor([math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0])
    element = torch.tensor([0.0, 0.075, 0.075])
    exact = torch.linalg.vector_norm(source - element).item() - 1.0
    computed = path_difference(element[None].double(), torch.tensor(math.pi / 6, dtype=torch.float64),
                               torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert computed.item() == pytest.approx(exact, abs=1e-7)


def test_fresnel_approximates_the_spherical_distance_with_third_order_error():
    positions = GEOMETRY.element_positions()
    angles = dict(azimuth=torch.tensor(0.5, dtype=torch.float64), elevation=torch.tensor(-0.2, dtype=torch.float64))
    errors = {}
    for r in (2.0, 4.0, 8.0):
        distance = torch.tensor(r, dtype=torch.float64)
        exact = path_difference(positions, distance=distance, model="exact", **angles)
        fresnel = path_difference(positions, distance=distance, model="fresnel", **angles)
        far = path_difference(positions, distance=distance, model="far", **angles)
        errors[r] = (exact - fresnel).abs().max().item()
        # the Fresnel remainder is bounded by |p|^3 / (2 r^2); plane waves are off by O(|p|^2 / r)
        assert errors[r] <= positions.norm(dim=1).max().item() ** 3 / (2 * r**2)
        assert (exact - far).abs().max().item() > 3 * errors[r]
    assert errors[2.0] / errors[4.0] == pytest.approx(4.0, rel=0.3)  # 1/r^2
    assert errors[4.0] / errors[8.0] == pytest.approx(4.0, rel=0.3)
    # at 0.5 m the Fresnel phase error exceeds pi/8: the simulator uses the exact distance
    near = torch.tensor(0.5, dtype=torch.float64)
    phase_error = GEOMETRY.wavenumber * (path_difference(positions, distance=near, **angles)
                                         - path_difference(positions, distance=near, model="fresnel", **angles)).abs().max()
    assert phase_error > math.pi / 8


def test_channel_codes_and_noise_have_the_stated_scales():
    generator = torch.Generator().manual_seed(0)
    channel = bs_ris_channel(GEOMETRY, 0.0, generator)
    assert channel.shape == (16, 144)
    assert (channel.abs() ** 2).sum().item() == pytest.approx(16.0, rel=1e-5)  # |H|_F^2 = M
    codes = random_codes(16, 144, 0, generator)
    assert torch.allclose(codes.abs(), torch.ones_like(codes.abs()))
    two_bit = random_codes(4, 144, 2, generator)
    assert torch.allclose(torch.cos(4 * torch.angle(two_bit)), torch.ones(4, 144), atol=1e-5)  # phases k * pi/2
    noise = coded_snapshots(channel, random_codes(4000, 144, 0, generator), torch.zeros(4000, 144, dtype=torch.complex64), 0.5, generator)
    assert (noise.abs() ** 2).mean().item() == pytest.approx(0.25, rel=0.03)


def test_ridge_backprojection_matches_the_n_by_n_solve_and_is_scale_invariant():
    generator = torch.Generator().manual_seed(1)
    channel = bs_ris_channel(GEOMETRY, 0.0, generator, torch.complex128)
    codes = random_codes(3, 144, 0, generator, torch.complex128)
    y = torch.randn(3, 16, dtype=torch.complex128, generator=generator)
    xhat = ridge_backprojection(y, channel, codes, 0.7)
    for l in range(3):
        sensing = channel * codes[l]
        gram = sensing.mH @ sensing
        alpha = 0.7 * gram.diagonal().real.sum() / 144
        direct = torch.linalg.solve(gram + alpha * torch.eye(144, dtype=gram.dtype), sensing.mH @ y[l])
        assert torch.allclose(xhat[l], direct, atol=1e-9)
    assert torch.allclose(ridge_backprojection(y, 3.0 * channel, codes, 0.7), xhat / 3.0, atol=1e-12)


def test_covariances_are_hermitian_psd_with_trace_n():
    positions = GEOMETRY.element_positions(torch.float32)
    angles = torch.tensor([[0.3, -0.5, 0.0]]), torch.tensor([[0.1, 0.2, 0.0]]), torch.tensor([[2.0, 5.0, 1.0]])
    r_true = source_covariance(positions, GEOMETRY.wavenumber, *angles, torch.tensor([[1.0, 1.0, 0.0]]))
    xhat = torch.randn(2, 16, 144, dtype=torch.complex64)
    r_samp = sample_covariance(xhat)
    for cov, rank in ((r_true, 2), (r_samp, 15)):
        assert torch.allclose(cov, cov.mH, atol=1e-5)
        eigvals = torch.linalg.eigvalsh(cov)
        assert eigvals.min() > -1e-3 and torch.allclose(cov.diagonal(dim1=-2, dim2=-1).sum(-1).real, torch.tensor(144.0), rtol=1e-5)
        assert int((eigvals > 1e-3 * eigvals.max()).sum(-1).max()) == rank  # K sources; L-1 after centring


def test_scenes_are_determined_by_seed_split_and_index():
    config = SceneConfig()
    first = simulate_scene(config, scene_generator(3, "train", 7))
    again = simulate_scene(config, scene_generator(3, "train", 7))
    other = simulate_scene(config, scene_generator(3, "val", 7))
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["y"], other["y"])
    k = int(first["k"])
    assert 1 <= k <= 5 and (first["power"][:k] == 1).all() and (first["power"][k:] == 0).all()
    assert -math.pi / 3 <= first["azimuth"][:k].min() and first["azimuth"][:k].max() <= math.pi / 3
    assert 0.5 <= first["range"][:k].min() and first["range"][:k].max() <= 10.0


def test_network_batch_is_real_stacked_with_the_true_covariance():
    config = SceneConfig()
    scenes = stack_scenes([simulate_scene(config, scene_generator(0, "test", i), snr_db=5.0) for i in range(3)])
    batch = network_batch(scenes, config.geometry)
    assert batch["y"].shape == (3, 16, 16, 2) and batch["H"].shape == (3, 16, 144, 2) and batch["C"].shape == (3, 16, 144, 2)
    assert batch["R_true"].shape == (3, 144, 144, 2) and torch.equal(as_complex(as_real(scenes["y"])), scenes["y"])
    assert torch.allclose(batch["snr_db"], torch.full((3,), 5.0))
    r_true = as_complex(batch["R_true"])
    assert torch.allclose(r_true.diagonal(dim1=-2, dim2=-1).real, torch.ones(3, 144), atol=1e-5)  # unit-modulus steering
