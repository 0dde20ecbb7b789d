"""Batch-level image augmentations on (B, C, H, W) float tensors, on whatever device the batch is.

Working on whole batches after the transfer to the device keeps the per-sample Python cost out
of the data loader: a whole augmentation is a handful of tensor ops per batch.
"""

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad by `padding` and crop back to (H, W) at a random offset per image."""
    if padding <= 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    dx = torch.randint(0, 2 * padding + 1, (batch,), device=images.device)
    rows = (dy[:, None] + torch.arange(height, device=images.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=images.device))[:, None, None, :]
    index = torch.arange(batch, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[index, channel, rows, cols]


def random_hflip(images: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    flip = torch.rand(images.shape[0], device=images.device) < p
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def cutout_mask(batch: int, height: int, width: int, size: int, device=None) -> torch.Tensor:
    """(B, 1, H, W) mask, 0 inside a size x size square centred at a uniform random pixel (clipped
    at the border: mask[y1:y2, x1:x2] = 0), 1 elsewhere. DeVries & Taylor, 2017."""
    cy = torch.randint(0, height, (batch,), device=device)
    cx = torch.randint(0, width, (batch,), device=device)
    y1, y2 = (cy - size // 2).clamp(0, height), (cy - size // 2 + size).clamp(0, height)
    x1, x2 = (cx - size // 2).clamp(0, width), (cx - size // 2 + size).clamp(0, width)
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    inside = (rows >= y1[:, None, None]) & (rows < y2[:, None, None]) & (cols >= x1[:, None, None]) & (cols < x2[:, None, None])
    return (~inside).to(torch.float32)[:, None]


def cutout(images: torch.Tensor, size: int) -> torch.Tensor:
    if size <= 0:
        return images
    batch, _, height, width = images.shape
    return images * cutout_mask(batch, height, width, size, images.device).to(images.dtype)
