"""Byte-level BPE for the GPT family, trained with HF `tokenizers`.

Pre-tokenization splits text with the GPT-4 (cl100k) regex, except that numbers are cut into
groups of at most two digits (`\\p{N}{1,2}`, as nanochat does: a small vocabulary should not spend
entries on three-digit numbers). Each piece is then mapped to bytes, so any string encodes and
decodes losslessly. Five special tokens frame documents and chats; four more (tokenizer version 2)
frame a Python tool call and its output. A version-1 tokenizer (five tokens) still loads: it has
no tool tokens, and `has_tools` is False.

`token_bytes[id]` is the number of UTF-8 bytes token `id` stands for (0 for special tokens); the
bytes of a token sequence are the sum over its tokens, which is what bits-per-byte divides by.

The saved `tokenizer.json` stands alone: the special tokens are in its vocabulary but not in its
`added_tokens`, so plain `tokenizers.Tokenizer.from_file` encodes a "<|bos|>" inside text as text,
as the family does (`encode_special_tokens` is not saved by `tokenizers`); the control ids are
`token_to_id("<|bos|>")` etc. `GPTTokenizer` adds them back as special tokens on load.
"""

import math
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from hylab.errors import UserError

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS = "<|bos|>"
USER_START, USER_END = "<|user_start|>", "<|user_end|>"
ASSISTANT_START, ASSISTANT_END = "<|assistant_start|>", "<|assistant_end|>"
SPECIAL_TOKENS = [BOS, USER_START, USER_END, ASSISTANT_START, ASSISTANT_END]
# Version 2 appends the tool tokens (ids 5-8 of a newly trained tokenizer); older tokenizers lack them.
PYTHON_START, PYTHON_END = "<|python_start|>", "<|python_end|>"
OUTPUT_START, OUTPUT_END = "<|output_start|>", "<|output_end|>"
TOOL_TOKENS = [PYTHON_START, PYTHON_END, OUTPUT_START, OUTPUT_END]
TOKENIZER_VERSION = 2
# 256 single bytes + the special tokens: the smallest vocabulary that can encode everything.
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS) + len(TOOL_TOKENS)


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters (ByteLevel's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(range(256), codes)}


UNICODE_TO_BYTE = {char: byte for byte, char in byte_to_unicode().items()}


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most `vocab_size` entries (fewer when the text has too few pairs)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"data.vocab_size={vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE}")
    if vocab_size > 2**32 - 1:
        raise UserError(f"data.vocab_size={vocab_size} does not fit token files of uint32")
    tokenizer = Tokenizer(models.BPE(byte_fallback=False, unk_token=None, fuse_unk=False))
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        show_progress=False,
        min_frequency=0,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=SPECIAL_TOKENS + TOOL_TOKENS,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


class GPTTokenizer:
    """What the family needs from a tokenizer: encode/decode, special ids, bytes per token."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
        if missing:
            raise UserError(f"the tokenizer lacks the special tokens {missing}: retrain it with task=train_tokenizer")
        # in the vocabulary already: this keeps their ids and lets decode skip them
        tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
        # A document that happens to contain "<|bos|>" must not turn into the control token.
        self.tokenizer.encode_special_tokens = True

    @classmethod
    def from_str(cls, text: str) -> "GPTTokenizer":
        return cls(Tokenizer.from_str(text))

    @classmethod
    def from_file(cls, path: str | Path) -> "GPTTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    def to_str(self) -> str:
        """The tokenizer's JSON without `added_tokens` (see the module docstring)."""
        import json

        data = json.loads(self.tokenizer.to_str())
        data["added_tokens"] = []
        return json.dumps(data, ensure_ascii=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        from hylab.records import atomic_write_text

        # atomic: the cache treats the file's existence as "ready", so a killed run must not leave half of it
        atomic_write_text(path, self.to_str())
        return path

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def id_of(self, token: str) -> int:
        return self.tokenizer.token_to_id(token)

    @cached_property
    def bos_id(self) -> int:
        return self.id_of(BOS)

    @cached_property
    def special_ids(self) -> set[int]:
        """The ids of every special token this tokenizer has (chat, and tool when version 2)."""
        return {self.id_of(token) for token in SPECIAL_TOKENS + TOOL_TOKENS if self.id_of(token) is not None}

    @cached_property
    def has_tools(self) -> bool:
        """Version 2: the tool-call tokens exist (a model trained with them can call Python)."""
        return all(self.id_of(token) is not None for token in TOOL_TOKENS)

    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings inside the text are encoded as ordinary text."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special)

    @cached_property
    def token_bytes(self) -> np.ndarray:
        """int32 array: UTF-8 byte count of each token id; 0 for the special tokens."""
        table = np.zeros(self.vocab_size, dtype=np.int32)
        for token, index in self.tokenizer.get_vocab().items():
            if index not in self.special_ids:
                table[index] = sum(1 for char in token if char in UNICODE_TO_BYTE)
        return table

    def token_bytes_of(self, ids: Iterable[int]) -> int:
        return int(self.token_bytes[np.asarray(list(ids), dtype=np.int64)].sum())

    def fingerprint(self) -> str:
        import hashlib

        return hashlib.sha256(self.to_str().encode()).hexdigest()[:16]


def bytes_per_token(encode_batch, texts: list[str]) -> dict[str, float]:
    """Compression of `texts` by a tokenizer: total UTF-8 bytes / total tokens."""
    total_bytes = sum(len(text.encode("utf-8")) for text in texts)
    total_tokens = sum(len(ids) for ids in encode_batch(texts))
    return {"bytes": total_bytes, "tokens": total_tokens, "bytes_per_token": total_bytes / max(1, total_tokens)}


def reference_tokenizers() -> dict:
    """Reference tokenizers that work offline, by name -> encode_batch.

    tiktoken downloads its encodings at first use and GPT-2's BPE for `tokenizers` comes from the
    model hub, so neither works offline. The `bpe-openai` package ships the cl100k (GPT-4) and
    o200k (GPT-4o) rank files inside its wheel; it is used when installed
    (`uv run --with bpe-openai ...`), never required.
    """
    try:
        import bpe_openai
    except ImportError:
        return {}
    found = {}
    for name in ("cl100k_base", "o200k_base"):
        try:
            encoding = bpe_openai.get_encoding(name)
        except Exception:  # an encoding it would have to download
            continue
        found[name] = lambda texts, encoding=encoding: [encoding.encode(text) for text in texts]
    return found


def evaluate_tokenizer(tokenizer: GPTTokenizer, texts: list[str]) -> dict[str, float]:
    """Bytes per token of our tokenizer on held-out texts, beside every offline reference."""
    ours = bytes_per_token(tokenizer.encode_batch, texts)
    metrics = {
        "tokenizer/vocab_size": float(tokenizer.vocab_size),
        "tokenizer/heldout_bytes": float(ours["bytes"]),
        "tokenizer/heldout_tokens": float(ours["tokens"]),
        "tokenizer/bytes_per_token": ours["bytes_per_token"],
    }
    for name, encode_batch in reference_tokenizers().items():
        metrics[f"tokenizer/bytes_per_token_{name}"] = bytes_per_token(encode_batch, texts)["bytes_per_token"]
    return metrics


def describe(metrics: dict[str, float]) -> str:
    refs = {k.rsplit("_token_", 1)[-1]: v for k, v in metrics.items() if k.startswith("tokenizer/bytes_per_token_")}
    text = f"vocab {int(metrics['tokenizer/vocab_size'])}: {metrics['tokenizer/bytes_per_token']:.3f} bytes/token on held-out text"
    if refs:
        text += "; " + ", ".join(f"{name} {value:.3f}" for name, value in refs.items())
    else:
        text += " (no offline reference tokenizer installed: `uv run --with bpe-openai` adds cl100k/o200k)"
    return text if math.isfinite(metrics["tokenizer/bytes_per_token"]) else text + " (no held-out text)"

