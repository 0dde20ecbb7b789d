"""The one DataLoader recipe the DataModules share, and the split DataModule built on it."""

from collections.abc import Callable

import lightning as L
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


class SplitDataModule(L.LightningDataModule):
    """A DataModule whose `setup` fills `self.datasets` ({"train", "val", "test"}, a missing test
    split falls back to val); the loaders are the same for every family.

    Subclasses set `batch_size`, `eval_batch_size` (None: batch_size), `num_workers` and
    `pin_memory`, and may override `dataset_loader` (a sampler, a collate function).
    """

    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    pin_memory: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.datasets: dict[str, Dataset] = {}

    def dataset_loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        return make_loader(dataset, batch_size, shuffle, self.num_workers, self.pin_memory,
                           collate_fn=getattr(dataset, "collate", batch_as_is))

    def _eval_loader(self, split: str) -> DataLoader:
        split = split if split in self.datasets else "val"
        return self.dataset_loader(split, self.eval_batch_size or self.batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self.dataset_loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
