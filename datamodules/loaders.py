"""The one DataLoader recipe the DataModules share."""

from collections.abc import Callable

from torch.utils.data import DataLoader, Dataset, Sampler


def batch_as_is(batch):
    """collate_fn for datasets whose __getitems__ already returns a stacked batch."""
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    pin_memory: bool = False,
    collate_fn: Callable | None = batch_as_is,
    sampler: Sampler | None = None,
) -> DataLoader:
    """Workers stay alive across epochs (their start-up costs more than an epoch of small data)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )
