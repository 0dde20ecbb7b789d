"""Typed settings of the RIS model, its net and its callback (torch-free, checked before torch
is imported). The geometry is the data side's `Geometry` (the config passes `${data.geometry}`)."""

from dataclasses import dataclass, field
from typing import Literal

from datamodules.ris.settings import Geometry, Interval, SourceSpace
from hylab.settings import between, non_negative, positive


@dataclass(frozen=True)
class GridSettings:
    """MUSIC's coarse grid and the box its refinement stays in (degrees, metres)."""

    azimuth_deg: Interval = (-60.0, 60.0)
    elevation_deg: Interval = (-30.0, 30.0)
    range_m: Interval = (0.5, 10.0)
    azimuth_step_deg: float = field(default=3.0, metadata=positive())
    elevation_step_deg: float = field(default=3.0, metadata=positive())
    inverse_range_points: int = field(default=13, metadata=positive())


@dataclass(frozen=True)
class MusicSettings(GridSettings):
    newton_steps: int = field(default=8, metadata=non_negative())


@dataclass(frozen=True)
class LikelihoodSettings:
    """The maximum-likelihood refinement (likelihood.py): Fisher-scoring iterations, how many of
    them move powers and noise only, the order penalty per real parameter (null: 1.5 log(L M), chosen on validation scenes), and
    the coarse grid added to the pool of starting points (grid_step_deg null: MUSIC's peaks only)."""

    iterations: int = field(default=20, metadata=non_negative())
    power_steps: int = field(default=3, metadata=non_negative())
    order_penalty: float | None = field(default=None, metadata=non_negative())
    grid_step_deg: float | None = field(default=6.0, metadata=positive())
    grid_inverse_range_points: int = field(default=9, metadata=positive())


@dataclass(frozen=True)
class LossWeights:
    nmse: float = field(default=1.0, metadata=non_negative())
    subspace: float = field(default=1.0, metadata=non_negative())
    eigengap: float = field(default=0.1, metadata=non_negative())
    count: float = field(default=0.2, metadata=non_negative())
    heatmap: float = field(default=1.0, metadata=non_negative())


@dataclass(frozen=True)
class RISLocalizerSettings:
    """beta: share of R_samp in the blend; ridge_k: alpha = ridge_k * tr(G^H G) / N of the
    back-projection; loading: eps of R_blend (trace N); k_from: the K given to MUSIC (ml: chosen
    by the information criterion on maximum-likelihood fits); refine: ml refines MUSIC's estimates
    by maximum likelihood on the coded snapshots."""

    geometry: Geometry = field(default_factory=Geometry)
    k_max: int = field(default=5, metadata=positive())
    snapshots: int = field(default=16, metadata=between(2))
    beta: float = field(default=0.3, metadata=between(0, 1))
    ridge_k: float = field(default=1.0, metadata=non_negative())
    loading: float = field(default=1e-3, metadata=non_negative())
    head_lr_multiplier: float = field(default=4.0, metadata=positive())
    loss_weights: LossWeights = field(default_factory=LossWeights)
    music: MusicSettings = field(default_factory=MusicSettings)
    k_from: Literal["truth", "head", "mdl", "aic", "ml"] = "truth"
    refine: Literal["none", "ml"] = "none"
    ml: LikelihoodSettings = field(default_factory=LikelihoodSettings)


@dataclass(frozen=True)
class BeamspaceNetSettings(SourceSpace):
    angle_step_deg: float = field(default=5.0, metadata=positive())
    inverse_range_bins: int = field(default=7, metadata=positive())
    channels: int = field(default=32, metadata=positive())
    blocks: int = field(default=3, metadata=non_negative())
    ridge_k: float = field(default=1.0, metadata=non_negative())


@dataclass(frozen=True)
class CovarianceLoggerSettings:
    every_n_steps: int = field(default=50, metadata=positive())
    plot_spectrum: bool = True


SCHEMAS = {
    "RISLocalizer": RISLocalizerSettings,
    "RISBeamspaceNet": BeamspaceNetSettings,
    "RISCovarianceLogger": CovarianceLoggerSettings,
}
