"""Typed settings of the RIS data side (torch-free, checked before torch is imported).

`Geometry` is the one list of geometry keys: `data.geometry` in the config, given as is to the
model and the net (`${data.geometry}`); `physics.RISGeometry` adds the arrays to it.
`SourceSpace` is what the simulator and the net share, `SceneSettings` the simulator's part
of `data`, `RISDataSettings` all of it.
"""

from dataclasses import dataclass, field

from hylab.errors import UserError
from hylab.settings import between, non_negative, positive

Interval = tuple[float, float]


@dataclass(frozen=True)
class Geometry:
    """A planar RIS of rows x cols elements (half-wavelength spacing by default) and a BS ULA of
    `bs_antennas` elements centred `bs_distance` metres away at azimuth `bs_azimuth_deg`."""

    wavelength: float = field(default=0.3, metadata=positive())
    rows: int = field(default=12, metadata=positive())
    cols: int = field(default=12, metadata=positive())
    spacing: float | None = field(default=None, metadata=positive())
    bs_antennas: int = field(default=16, metadata=positive())
    bs_distance: float = field(default=8.0, metadata=positive())
    bs_azimuth_deg: float = field(default=40.0, metadata=between(-180, 180))


def ordered_intervals(settings, *keys: str) -> None:
    for key in keys:
        low, high = getattr(settings, key)
        if not low <= high:
            raise UserError(f"data.{key}=[{low}, {high}]: the first value must not exceed the second")


@dataclass(frozen=True)
class SourceSpace:
    """The array, the snapshot count and the box the sources lie in: what the simulator and the
    net share (the net gets the data's values by interpolation)."""

    geometry: Geometry = field(default_factory=Geometry)
    snapshots: int = field(default=16, metadata=between(2))
    k_max: int = field(default=5, metadata=positive())
    azimuth_deg: Interval = (-60.0, 60.0)
    elevation_deg: Interval = (-30.0, 30.0)
    range_m: Interval = (0.5, 10.0)

    def __post_init__(self):
        ordered_intervals(self, "azimuth_deg", "elevation_deg", "range_m")
        if self.range_m[0] <= 0:
            raise UserError(f"data.range_m starts at {self.range_m[0]}: ranges must be positive")
        if not 1 <= self.k_max < self.snapshots:
            raise UserError(f"data.k_max={self.k_max} must be in 1..snapshots-1 ({self.snapshots - 1}): "
                            "the sample covariance of L snapshots has rank at most L-1")


@dataclass(frozen=True)
class SceneSettings(SourceSpace):
    """What a simulated scene depends on (besides its seed): see scenes.simulate_scene."""

    snr_db: Interval = (-5.0, 20.0)
    min_separation_deg: float = field(default=10.0, metadata=non_negative())
    rician_k_db: float = 0.0
    code_bits: int = field(default=0, metadata=non_negative())

    def __post_init__(self):
        super().__post_init__()
        ordered_intervals(self, "snr_db")


@dataclass(frozen=True)
class RISDataSettings(SceneSettings):
    """`test_snr_db` fixes the SNR of the test split (curves versus SNR; null draws it from
    snr_db); `cache_dir` writes each split once as shards of `shard_size` scenes."""

    seed: int = 0
    n_train: int = field(default=4096, metadata=positive())
    n_val: int = field(default=256, metadata=positive())
    n_test: int = field(default=256, metadata=positive())
    test_snr_db: float | None = None
    batch_size: int = field(default=64, metadata=positive())
    eval_batch_size: int | None = field(default=None, metadata=positive())
    num_workers: int = field(default=0, metadata=non_negative())
    cache_dir: str | None = None
    shard_size: int = field(default=1024, metadata=positive())


SCHEMAS = {"RISDataModule": RISDataSettings}
