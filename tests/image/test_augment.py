import torch

from datamodules.image import augment


def test_random_crop_is_a_shifted_window_of_the_padded_image():
    torch.manual_seed(0)
    images = torch.rand(16, 2, 6, 6)
    assert torch.equal(augment.random_crop(images, 0), images)
    out = augment.random_crop(images, 2)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    for b in range(16):
        windows = [padded[b, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)


def test_hflip_flips_whole_images_only():
    torch.manual_seed(0)
    images = torch.rand(64, 1, 4, 4)
    out = augment.random_hflip(images)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54


def test_cutout_zeroes_a_clipped_square():
    torch.manual_seed(0)
    mask = augment.cutout_mask(200, 10, 12, size=4)
    zeros = (mask == 0).sum(dim=(1, 2, 3))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert zeros.max() == 16 and zeros.min() >= 4  # a full 4x4 square, or clipped at a corner
    for m in mask[:20, 0]:
        rows, cols = torch.nonzero(m == 0, as_tuple=True)
        # the zeroed region is one axis-aligned rectangle
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    images = torch.ones(3, 2, 10, 12)
    assert torch.equal(augment.cutout(images, 0), images)
