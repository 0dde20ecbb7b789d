"""In-memory (input, label) datasets shared by the classification DataModules (images, wearable windows)."""

import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """(x, label) pairs from in-memory tensors; `__getitems__` serves a whole batch at once
    (the loaders' default collate passes it through)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]
