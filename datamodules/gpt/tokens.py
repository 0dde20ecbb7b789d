"""Token files and the packed-sequence dataset over them.

A token file is every document as <|bos|> + its tokens, concatenated (uint16 when the vocabulary
fits, else uint32), read with np.memmap. A training sample is window i of the stream: inputs
tokens[i*T : i*T+T], targets shifted by one. The dataset is map-style, so Lightning swaps in a
DistributedSampler under DDP by itself.
"""

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datamodules.gpt.corpus import Document
from datamodules.gpt.tokenizer import GPTTokenizer


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def write_token_file(path: Path, tokenizer: GPTTokenizer, documents: Sequence[Document], chunk: int = 64) -> int:
    """Stream `documents` into `path` as <|bos|> + ids each; atomic (written aside, then renamed)."""
    dtype = token_dtype(tokenizer.vocab_size)
    partial = path.with_name(path.name + ".partial")
    count = 0
    with open(partial, "wb") as handle:
        for start in range(0, len(documents), chunk):
            texts = [doc.text for doc in documents[start : start + chunk]]
            for ids in tokenizer.encode_batch(texts):
                np.asarray([tokenizer.bos_id, *ids], dtype=dtype).tofile(handle)
                count += 1 + len(ids)
    os.replace(partial, path)
    return count


def token_files_problem(folder: Path) -> str | None:
    """What is wrong with a token cache folder (a file missing, truncated or altered), or None.
    meta.json records each file's token count and sha256 when it is written."""
    import json

    from hylab.store import sha256_file

    try:
        meta = json.loads((folder / "meta.json").read_text())
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split, count in meta["tokens"].items():
            path = folder / f"{split}.bin"
            if not path.is_file():
                return f"{path.name} is missing"
            if path.stat().st_size != count * itemsize:
                return f"{path.name} holds {path.stat().st_size // itemsize} tokens, meta.json says {count}"
            expected = (meta.get("sha256") or {}).get(split)
            if expected and sha256_file(path) != expected:
                return f"{path.name} does not match its checksum"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable meta.json ({err})"
    return None


def move_aside(folder: Path) -> Path:
    """Keep a damaged cache for inspection instead of deleting it."""
    import time

    aside = folder.with_name(f"{folder.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    os.replace(folder, aside)
    return aside


class PackedSequences(Dataset):
    """Non-overlapping windows of T + 1 tokens from a token file (opened lazily in each worker)."""

    def __init__(self, path: str | Path, dtype: np.dtype, sequence_len: int, max_sequences: int | None = None):
        self.path, self.dtype, self.sequence_len = str(path), np.dtype(dtype), sequence_len
        total = os.path.getsize(self.path) // self.dtype.itemsize
        self.length = max(0, (total - 1) // sequence_len)
        if max_sequences:
            self.length = min(self.length, max_sequences)
        self._tokens = None

    def __len__(self) -> int:
        return self.length

    def tokens(self) -> np.memmap:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.sequence_len
        window = torch.from_numpy(self.tokens()[start : start + self.sequence_len + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self):  # workers re-open the memmap instead of receiving a copy of it
        return {**self.__dict__, "_tokens": None}


def cache_key(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]
