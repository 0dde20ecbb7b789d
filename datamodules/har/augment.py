"""Batch augmentations of inertial windows (B, C, T), on whatever device the batch is.

The three of Um et al., "Data augmentation of wearable sensor data for Parkinson's disease
monitoring using convolutional neural networks", ICMI 2017. Windows are already normalized per
channel, so sigmas are in units of a channel's standard deviation.
"""

import torch


def jitter(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x + e, e ~ N(0, sigma^2) per sample: sensor noise."""
    if sigma <= 0:
        return x
    return x + sigma * torch.randn_like(x)


def scaling(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x * s, s ~ N(1, sigma^2) per window and channel: sensor gain and placement."""
    if sigma <= 0:
        return x
    return x * (1.0 + sigma * torch.randn(x.shape[0], x.shape[1], 1, device=x.device, dtype=x.dtype))


def warped_positions(batch: int, length: int, sigma: float, knots: int, device=None) -> torch.Tensor:
    """(B, T) increasing sample positions from 0 to T - 1: a smooth random time axis.

    The speed v(t) is 1 + sigma * N(0, 1) at knots + 2 evenly spaced points, linearly interpolated
    to T points and kept > 0; position(t) = sum_{u < t} v(u), rescaled to end at T - 1.
    """
    speed_at_knots = (1.0 + sigma * torch.randn(batch, 1, knots + 2, device=device)).clamp_min(0.1)
    speed = torch.nn.functional.interpolate(speed_at_knots, size=length, mode="linear", align_corners=True)[:, 0]
    position = torch.cumsum(speed, dim=1) - speed[:, :1]
    return position * ((length - 1) / position[:, -1:])


def time_warp(x: torch.Tensor, sigma: float, knots: int = 4) -> torch.Tensor:
    """Resample each window along a smooth random time axis (linear interpolation between samples):
    the same movement done a little faster here and slower there."""
    if sigma <= 0:
        return x
    batch, channels, length = x.shape
    position = warped_positions(batch, length, sigma, knots, x.device).to(x.dtype)
    left = position.floor().long().clamp(0, length - 2)
    weight = (position - left.to(x.dtype))[:, None, :]
    index = left[:, None, :].expand(batch, channels, length)
    return torch.lerp(x.gather(2, index), x.gather(2, index + 1), weight)


def augment(x: torch.Tensor, jitter_sigma: float = 0.0, scaling_sigma: float = 0.0, time_warp_sigma: float = 0.0) -> torch.Tensor:
    return jitter(scaling(time_warp(x, time_warp_sigma), scaling_sigma), jitter_sigma)
