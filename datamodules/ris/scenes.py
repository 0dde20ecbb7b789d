"""Random RIS scenes, each fully determined by (seed, split, index), and the batch the network sees.

A scene: K ~ U{1..K_MAX} unit-power, uncorrelated sources at random (azimuth, elevation, range),
at least `min_separation_deg` apart; a BS-RIS channel; L random phase codes; L coded snapshots
at an SNR drawn from `snr_db` (per source, per BS antenna).
"""

import math
from dataclasses import asdict

import numpy as np
import torch

from datamodules.ris.physics import (
    RISGeometry,
    as_real,
    bs_ris_channel,
    coded_snapshots,
    complex_normal,
    random_codes,
    source_covariance,
    steering,
    unit_direction,
)
from datamodules.ris.settings import SceneSettings
from hylab.errors import UserError

SPLITS = {"train": 0, "val": 1, "test": 2, "bench": 3}


class SceneConfig(SceneSettings):
    """The scene settings with their geometry as a RISGeometry."""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "geometry", RISGeometry.of(self.geometry))  # frozen: set once, here

    def as_dict(self) -> dict:
        return asdict(self)


def scene_generator(seed: int, split: str, index: int) -> torch.Generator:
    """An independent random stream per scene (numpy SeedSequence mixes the three numbers)."""
    state = np.random.SeedSequence([seed, SPLITS[split], index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(bounds, generator, size=()) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * torch.rand(size, generator=generator, dtype=torch.float64)


def sample_sources(cfg: SceneConfig, count: int, generator: torch.Generator, tries: int = 200):
    """`count` (azimuth, elevation) pairs in radians at least min_separation_deg apart, and ranges."""
    min_cos = math.cos(math.radians(cfg.min_separation_deg))
    chosen: list[torch.Tensor] = []
    directions: list[torch.Tensor] = []
    for _ in range(count):
        for _attempt in range(tries):
            angle = torch.deg2rad(torch.stack([_uniform(cfg.azimuth_deg, generator), _uniform(cfg.elevation_deg, generator)]))
            direction = unit_direction(angle[0], angle[1])
            if all(float(direction @ other) < min_cos for other in directions):
                break
        else:
            raise UserError(f"could not place {count} sources {cfg.min_separation_deg} deg apart in the allowed "
                            "angles: lower data.min_separation_deg or data.k_max")
        chosen.append(angle)
        directions.append(direction)
    angles = torch.stack(chosen)
    ranges = _uniform(cfg.range_m, generator, (count,))
    return angles[:, 0], angles[:, 1], ranges


def simulate_scene(cfg: SceneConfig, generator: torch.Generator, count: int | None = None, snr_db: float | None = None) -> dict:
    """One scene as complex tensors plus its ground truth, source slots padded to k_max."""
    geometry = cfg.geometry
    if count is None:
        count = int(torch.randint(1, cfg.k_max + 1, (), generator=generator))
    if snr_db is None:
        snr_db = float(_uniform(cfg.snr_db, generator))
    azimuth, elevation, ranges = sample_sources(cfg, count, generator)
    positions = geometry.element_positions()
    sources = steering(positions, geometry.wavenumber, azimuth, elevation, ranges).to(torch.complex64)  # (K, N)
    channel = bs_ris_channel(geometry, cfg.rician_k_db, generator)
    codes = random_codes(cfg.snapshots, geometry.num_elements, cfg.code_bits, generator)
    signals = complex_normal((cfg.snapshots, count), generator)  # unit power, uncorrelated
    noise_std = math.sqrt(10 ** (-snr_db / 10))
    y = coded_snapshots(channel, codes, signals @ sources, noise_std, generator)
    pad = cfg.k_max - count
    return {
        "y": y,
        "H": channel,
        "C": codes,
        "azimuth": torch.nn.functional.pad(azimuth, (0, pad)).float(),
        "elevation": torch.nn.functional.pad(elevation, (0, pad)).float(),
        "range": torch.nn.functional.pad(ranges, (0, pad), value=1.0).float(),
        "power": torch.nn.functional.pad(torch.ones(count), (0, pad)),
        "k": torch.tensor(count),
        "snr_db": torch.tensor(snr_db, dtype=torch.float32),
    }


COMPLEX_KEYS = ("y", "H", "C")


def stack_scenes(scenes: list[dict]) -> dict:
    return {key: torch.stack([scene[key] for scene in scenes]) for key in scenes[0]}


def network_batch(scenes: dict, geometry: RISGeometry) -> dict:
    """Stacked complex scenes -> the batch the module sees: y/H/C stacked as real [..., 2], the
    ground truth, and R_true (trace N) stacked the same way."""
    batch = {key: as_real(value) if key in COMPLEX_KEYS else value for key, value in scenes.items()}
    r_true = source_covariance(
        geometry.element_positions(torch.float32), geometry.wavenumber,
        scenes["azimuth"], scenes["elevation"], scenes["range"], scenes["power"],
    )
    batch["R_true"] = as_real(r_true)
    return batch
