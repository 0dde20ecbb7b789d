"""Language-model data: a corpus, its BPE tokenizer, packed fixed-length sequences from token files.

Preparation is cached under <data_dir>/gpt/cache and idempotent (a file lock guards it against
concurrent runs; in DDP only local rank 0 prepares, the others read):

  <corpus key>/tokenizer.json            trained on the training documents, keyed by their content,
                                         vocab size and BPE training budget
  <corpus key>/<tokenizer>/train.bin     every document as <|bos|> + its tokens, concatenated
  <corpus key>/<tokenizer>/val.bin       (uint16 when the vocabulary fits, else uint32), read with np.memmap

A training sample is window i of the stream: inputs tokens[i*T : i*T+T], targets shifted by one.
The dataset is map-style, so Lightning swaps in a DistributedSampler under DDP by itself.
"""

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from datamodules.gpt_corpus import Document, fingerprint, load_documents, split_documents
from datamodules.gpt_tokenizer import SPLIT_PATTERN, GPTTokenizer, train_bpe
from datamodules.loaders import make_loader
from hylab.errors import UserError

log = logging.getLogger("hylab")


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


class TokenDataModule(L.LightningDataModule):
    """What the GPT module reads from its data: `tokenizer`, `token_bytes`, and train/val loaders
    over `train_set` / `val_set` (test = val: the held-out documents)."""

    tokenizer: GPTTokenizer | None = None
    train_set: Dataset | None = None
    val_set: Dataset | None = None

    @property
    def token_bytes(self) -> torch.Tensor:
        return torch.from_numpy(self.tokenizer.token_bytes)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(dataset, batch_size, shuffle, self.hparams.num_workers, self.hparams.get("pin_memory", False),
                           collate_fn=getattr(dataset, "collate", None))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.hparams.eval_batch_size or self.hparams.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()



class TextDataModule(TokenDataModule):
    def __init__(
        self,
        source: str = "stdlib",
        data_dir: str = "data",
        paths: Sequence[str] = (),
        val_fraction: float = 0.05,
        max_bytes: int | None = None,
        vocab_size: int = 4096,
        tokenizer_train_bytes: int | None = 5_000_000,
        sequence_len: int = 256,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        max_val_sequences: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        paths = [str(p) for p in paths]  # plain values only: checkpoints load with weights_only=True
        self.save_hyperparameters(logger=False)
        self._splits: tuple[list[Document], list[Document]] | None = None

    # ---- corpus and tokenizer -------------------------------------------------------------
    def splits(self) -> tuple[list[Document], list[Document]]:
        if self._splits is None:
            hp = self.hparams
            documents = load_documents(hp.source, hp.data_dir, hp.paths)
            self._splits = split_documents(documents, hp.val_fraction, hp.max_bytes)
        return self._splits

    @property
    def val_documents(self) -> list[Document]:
        return self.splits()[1]

    def cache_dir(self) -> Path:
        hp = self.hparams
        key = cache_key(fingerprint(self.splits()[0]), hp.vocab_size, hp.tokenizer_train_bytes, SPLIT_PATTERN)
        return Path(hp.data_dir) / "gpt" / "cache" / key

    def tokenizer_training_texts(self):
        """The training documents, cut off after `tokenizer_train_bytes` bytes."""
        budget = self.hparams.tokenizer_train_bytes
        used = 0
        for doc in self.splits()[0]:
            if budget and used >= budget:
                return
            text = doc.text if not budget else doc.text[: budget - used]
            used += len(text.encode("utf-8"))
            yield text

    def train_tokenizer(self) -> GPTTokenizer:
        """Train a BPE on the training documents and store it in the cache (replacing any)."""
        tokenizer = GPTTokenizer(train_bpe(self.tokenizer_training_texts(), self.hparams.vocab_size))
        tokenizer.save(self.cache_dir() / "tokenizer.json")
        return tokenizer

    def load_or_train_tokenizer(self) -> GPTTokenizer:
        path = self.cache_dir() / "tokenizer.json"
        if path.is_file():
            return GPTTokenizer.from_file(path)
        log.info(f"training a {self.hparams.vocab_size}-token BPE on data.source={self.hparams.source} (cached at {path})")
        return self.train_tokenizer()

    # ---- token files -------------------------------------------------------------------------
    def token_dir(self) -> Path:
        return self.cache_dir() / self.tokenizer.fingerprint()

    def _prepare(self) -> None:
        cache = self.cache_dir()
        cache.mkdir(parents=True, exist_ok=True)
        with FileLock(str(cache) + ".lock"):
            self.tokenizer = self.load_or_train_tokenizer()
            folder = self.token_dir()
            folder.mkdir(parents=True, exist_ok=True)
            meta_path = folder / "meta.json"
            if meta_path.is_file():
                return
            counts = {}
            for split, docs in zip(("train", "val"), self.splits()):
                counts[split] = write_token_file(folder / f"{split}.bin", self.tokenizer, docs)
            meta = {"dtype": token_dtype(self.tokenizer.vocab_size).name, "tokens": counts, "source": self.hparams.source}
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
            log.info(f"wrote token files {counts} to {folder}")

    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self._prepare()  # a no-op after prepare_data, except on ranks that did not run it
        folder, hp = self.token_dir(), self.hparams
        dtype = token_dtype(self.tokenizer.vocab_size)
        self.train_set = PackedSequences(folder / "train.bin", dtype, hp.sequence_len)
        self.val_set = PackedSequences(folder / "val.bin", dtype, hp.sequence_len, hp.max_val_sequences)
        for name, dataset in (("train", self.train_set), ("val", self.val_set)):
            if len(dataset) == 0:
                raise UserError(
                    f"the {name} split of data.source={hp.source} has fewer than data.sequence_len={hp.sequence_len} "
                    "tokens: lower data.sequence_len or give more text"
                )
