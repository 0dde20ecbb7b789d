"""The GPT family's DataModules: packed token windows of a text corpus (pre-training) and
rendered conversations with a loss mask (chat fine-tuning).

Preparation is cached under <data_dir>/gpt/cache and idempotent (a file lock guards it against
concurrent runs; in DDP only local rank 0 prepares, the others read):

  <corpus key>/tokenizer.json            trained on the training documents, keyed by their content,
                                         vocab size and BPE training budget
  <corpus key>/<tokenizer>/train.bin     token files (tokens.py)
  <corpus key>/<tokenizer>/val.bin
"""

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock
from torch.utils.data import DataLoader

from datamodules.gpt.chat import ConversationSet, docstring_conversations, render_conversation
from datamodules.gpt.corpus import Document, fingerprint, load_documents, split_documents
from datamodules.gpt.tokenizer import SPLIT_PATTERN, TOKENIZER_VERSION, GPTTokenizer, train_bpe
from datamodules.gpt.tokens import PackedSequences, cache_key, move_aside, token_dtype, token_files_problem, write_token_file
from hylab.records import atomic_write_text
from hylab.store import sha256_file
from datamodules.loaders import SplitDataModule, make_loader
from hylab.errors import UserError

log = logging.getLogger("hylab")


class TokenDataModule(SplitDataModule):
    """What the GPT module reads from its data: `tokenizer`, `token_bytes`, and loaders over
    `datasets["train"]` / `datasets["val"]` (test = val: the held-out documents). A dataset with a
    `collate` method (conversations) pads its batches with it; token windows use the default."""

    tokenizer: GPTTokenizer | None = None

    def __init__(self, batch_size: int, eval_batch_size: int | None, num_workers: int, pin_memory: bool = False):
        super().__init__()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory

    @property
    def token_bytes(self) -> torch.Tensor:
        return torch.from_numpy(self.tokenizer.token_bytes)

    def dataset_loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        return make_loader(dataset, batch_size, False, self.num_workers, self.pin_memory, collate_fn=getattr(dataset, "collate", None),
                           sampler=self.sampler(dataset, shuffle))


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
        super().__init__(batch_size, eval_batch_size, num_workers, pin_memory)
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
        key = cache_key(fingerprint(self.splits()[0]), hp.vocab_size, hp.tokenizer_train_bytes, SPLIT_PATTERN, TOKENIZER_VERSION)
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
                problem = token_files_problem(folder)
                if problem is None:
                    return
                aside = move_aside(folder)
                log.warning(f"token cache {folder} is damaged ({problem}); moved to {aside}, rebuilding it")
                folder.mkdir(parents=True)
            counts = {}
            for split, docs in zip(("train", "val"), self.splits()):
                counts[split] = write_token_file(folder / f"{split}.bin", self.tokenizer, docs)
            meta = {"dtype": token_dtype(self.tokenizer.vocab_size).name, "tokens": counts, "source": self.hparams.source,
                    "sha256": {split: sha256_file(folder / f"{split}.bin") for split in counts}}
            atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
            log.info(f"wrote token files {counts} to {folder}")

    def prepare_data(self) -> None:
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        self._prepare()  # a no-op after prepare_data, except on ranks that did not run it
        folder, hp = self.token_dir(), self.hparams
        dtype = token_dtype(self.tokenizer.vocab_size)
        self.datasets = {
            "train": PackedSequences(folder / "train.bin", dtype, hp.sequence_len),
            "val": PackedSequences(folder / "val.bin", dtype, hp.sequence_len, hp.max_val_sequences),
        }
        for name, dataset in self.datasets.items():
            if len(dataset) == 0:
                raise UserError(
                    f"the {name} split of data.source={hp.source} has fewer than data.sequence_len={hp.sequence_len} "
                    "tokens: lower data.sequence_len or give more text"
                )


class ChatDataModule(TokenDataModule):
    """Docstring Q&A conversations for SFT, tokenized with the base model's tokenizer."""

    def __init__(
        self,
        tokenizer_from: str | None = None,
        source: str = "stdlib",
        data_dir: str = "data",
        paths: Sequence[str] = (),
        val_fraction: float = 0.05,
        max_bytes: int | None = None,
        sequence_len: int = 256,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        base: dict | None = None,
    ):
        super().__init__(batch_size, eval_batch_size, num_workers)
        from lightning_modules.gpt.checkpoint import read_gpt_checkpoint, resolve_init_from

        tokenizer_from = resolve_init_from(tokenizer_from, base)
        if not tokenizer_from:
            raise UserError(
                "chat fine-tuning starts from a GPT checkpoint and uses its tokenizer: add "
                "model.init_from=<run dir of experiment=gpt_tiny>/checkpoints/last.ckpt, or "
                "model.base.experiment=<name> (the run store trains or reuses it)"
            )
        self.save_hyperparameters(logger=False)
        self.tokenizer = read_gpt_checkpoint(tokenizer_from, key="model.init_from").tokenizer

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        documents = load_documents(hp.source, hp.data_dir, hp.paths)
        splits = split_documents(documents, hp.val_fraction, hp.max_bytes)
        for name, docs in zip(("train", "val"), splits):
            rendered = [render_conversation(self.tokenizer, c) for c in docstring_conversations(docs)]
            if not rendered:
                raise UserError(f"the {name} documents of data.source={hp.source} hold no docstrings to make conversations from")
            self.datasets[name] = ConversationSet(rendered, hp.sequence_len, self.tokenizer.bos_id)
