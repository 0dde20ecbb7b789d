"""The one DataLoader recipe the DataModules share, and the split DataModule built on it.

A run interrupted at any step continues on the batches the uninterrupted run would have seen:
training order comes from `EpochShuffle` (a function of seed and epoch), and the loader's
position in the epoch goes into every checkpoint (`ResumableLoader`), so a resumed run skips the
batches its epoch already trained on instead of starting the epoch again.
"""

import itertools
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
) -> "ResumableLoader":
    """Workers stay alive across epochs (their start-up costs more than an epoch of small data).

    The loader has its own generator: starting an iterator draws a seed from it, and drawing from
    the global one instead would shift the numbers of everything after it, so a resumed run
    would not repeat the uninterrupted one (callbacks/step_seed.py)."""
    import torch

    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(torch.initial_seed() % 2**63),
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
        return make_loader(dataset, batch_size, False, self.num_workers, self.pin_memory,
                           collate_fn=getattr(dataset, "collate", batch_as_is), sampler=self.sampler(dataset, shuffle))

    @staticmethod
    def sampler(dataset: Dataset, shuffle: bool) -> Sampler | None:
        """Shuffled splits get an order fixed by (run seed, epoch), so resumed runs repeat it."""
        import torch

        return EpochShuffle(len(dataset), torch.initial_seed()) if shuffle else None

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


class EpochShuffle(Sampler[int]):
    """A random order that depends only on (seed, epoch): Lightning calls `set_epoch` before each
    epoch, so a run resumed at an epoch boundary sees the orders the uninterrupted run saw."""

    def __init__(self, length: int, seed: int):
        self.length = length
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        import torch

        # modulo 2**63: an unseeded process's torch.initial_seed() is a random 64-bit number
        generator = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.length, generator=generator).tolist())

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        """The seed the interrupted run shuffled with (a run without `seed` draws a new one)."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])


class ResumableLoader(DataLoader):
    """A DataLoader that knows its position in the epoch.

    Lightning saves the `state_dict` of the training loader in every checkpoint and hands it back
    to `load_state_dict` when a fit resumes; the first epoch iterated after that skips the batches
    the checkpoint had already trained on, if it is the epoch the checkpoint was written in (a
    checkpoint from the end of an epoch resumes at the start of the next one). The epoch comes from
    the sampler (`EpochShuffle`, or the DistributedSampler Lightning wraps it in under DDP, whose
    shards are then skipped per rank). Skipped batches are read and dropped: the data pipeline
    draws no random numbers (augmentation runs on the device, after transfer)."""

    _epoch: int | None = None
    _batches: int = 0
    _resume_at: dict | None = None

    def state_dict(self) -> dict:
        order = getattr(self.sampler, "state_dict", None)
        return {"epoch": self._epoch, "batches": self._batches, "order": order() if callable(order) else None}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = dict(state)
        order = getattr(self.sampler, "load_state_dict", None)
        if state.get("order") is not None and callable(order):
            order(state["order"])

    def __iter__(self):
        return self._batches_of_epoch()

    def _batches_of_epoch(self):
        # a generator: this runs at the first batch, after Lightning has set the sampler's epoch
        epoch = getattr(self.sampler, "epoch", None)
        resume, self._resume_at = self._resume_at, None
        skip = resume["batches"] if resume and epoch is not None and resume.get("epoch") == epoch else 0
        self._epoch, self._batches = epoch, skip
        batches = super().__iter__()
        for batch in itertools.islice(batches, skip, None):
            self._batches += 1
            yield batch
