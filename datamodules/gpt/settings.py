"""Settings of the GPT DataModules (torch-free): the keys conf/data/gpt_*.yaml give them."""

from dataclasses import dataclass, field
from typing import Any, Literal

from hylab.settings import between, non_negative, positive

Source = Literal["stdlib", "python_docs", "austen", "files"]  # the corpora of corpus.py


@dataclass
class CorpusSettings:
    source: Source = "stdlib"
    data_dir: str = "data"
    paths: list[str] = field(default_factory=list)
    val_fraction: float = field(default=0.05, metadata=between(0, 1))
    max_bytes: int | None = field(default=None, metadata=non_negative())  # None or 0: all
    sequence_len: int = field(default=256, metadata=positive())
    batch_size: int = field(default=32, metadata=positive())
    eval_batch_size: int | None = field(default=None, metadata=positive())
    num_workers: int = field(default=0, metadata=non_negative())


@dataclass
class TextDataSettings(CorpusSettings):
    vocab_size: int = field(default=4096, metadata=positive())
    tokenizer_train_bytes: int | None = field(default=5_000_000, metadata=non_negative())  # None or 0: all
    max_val_sequences: int | None = field(default=None, metadata=non_negative())  # None or 0: all
    pin_memory: bool = False


@dataclass
class ChatDataSettings(CorpusSettings):
    tokenizer_from: str | None = None  # the checkpoint being fine-tuned (model.init_from)
    batch_size: int = field(default=16, metadata=positive())
    base: dict | None = None  # model.base: the run-store base model when tokenizer_from is null


@dataclass
class ArithmeticProblemSettings:
    tokenizer_from: str | None = None  # the checkpoint being trained (model.init_from)
    base: Any = None  # the run-store base model when tokenizer_from is null (model.base)
    num_train: int = field(default=20000, metadata=positive())
    num_val: int = field(default=100, metadata=positive())
    max_operand: int = field(default=99, metadata=positive())
    sequence_len: int = field(default=128, metadata=positive())
    batch_size: int = field(default=4, metadata=positive())
    eval_batch_size: int | None = field(default=None, metadata=positive())
    num_workers: int = field(default=0, metadata=non_negative())


@dataclass
class ArithmeticChatSettings(ArithmeticProblemSettings):
    tool: bool = True  # answers call the Python tool; false: they answer directly
    num_val: int = field(default=200, metadata=positive())
    batch_size: int = field(default=32, metadata=positive())


SCHEMAS = {
    "TextDataModule": TextDataSettings,
    "ChatDataModule": ChatDataSettings,
    "ArithmeticChatDataModule": ArithmeticChatSettings,
    "ArithmeticProblemDataModule": ArithmeticProblemSettings,
}
