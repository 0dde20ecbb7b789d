"""The GPT family's byte-level BPE: lossless, the split regex, special tokens, bytes per token."""

import pytest

from datamodules.gpt.tokenizer import (
    BOS,
    MIN_VOCAB_SIZE,
    SPECIAL_TOKENS,
    GPTTokenizer,
    byte_to_unicode,
    evaluate_tokenizer,
    train_bpe,
)
from hylab.errors import UserError

TEXTS = [
    "The family of Dashwood had long been settled in Sussex. Their estate was large, and their residence "
    "was at Norland Park, in the centre of their property. " * 20,
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n" * 20,
    "In 1811 there were 123456 readers; 2024 - 1999 = 25.\n" * 10,
]
TRICKY = "naïve café — 日本語 🎉\n\ttabs\r\n  spaces   <|bos|> 'll 've 12345678 x**2"


@pytest.fixture(scope="module")
def tokenizer() -> GPTTokenizer:
    return GPTTokenizer(train_bpe(TEXTS, 400))


def test_vocabulary_has_the_special_tokens_first_and_at_most_the_requested_size(tokenizer):
    assert 300 < tokenizer.vocab_size <= 400  # fewer when the text runs out of pairs to merge
    assert [tokenizer.id_of(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.bos_id == tokenizer.id_of(BOS)


def test_encode_decode_is_lossless_on_any_text(tokenizer):
    for text in [*TEXTS, TRICKY, "", "\x00\x01 binary-ish \udcff".encode("utf-8", "replace").decode()]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_special_token_strings_in_text_stay_text(tokenizer):
    ids = tokenizer.encode("a <|bos|> b <|assistant_end|>")
    assert not set(ids) & tokenizer.special_ids


def test_numbers_are_split_in_groups_of_at_most_two_digits(tokenizer):
    for token in (tokenizer.decode([i]) for i in tokenizer.encode("12345678 and 2024")):
        assert sum(ch.isdigit() for ch in token) <= 2


def test_token_bytes_sum_to_the_utf8_length(tokenizer):
    assert len(byte_to_unicode()) == 256 and len(set(byte_to_unicode().values())) == 256
    for text in [*TEXTS, TRICKY]:
        assert tokenizer.token_bytes_of(tokenizer.encode(text)) == len(text.encode("utf-8"))
    assert all(tokenizer.token_bytes[i] == 0 for i in tokenizer.special_ids)
    # a single byte token that is half of "é" still counts as one byte
    first_byte_of_e_acute = tokenizer.encode("é")[0]
    assert tokenizer.token_bytes[first_byte_of_e_acute] >= 1


def test_serialization_round_trip_keeps_ids(tokenizer, tmp_path):
    again = GPTTokenizer.from_file(tokenizer.save(tmp_path / "tok.json"))
    assert again.encode(TRICKY) == tokenizer.encode(TRICKY)
    assert again.fingerprint() == tokenizer.fingerprint()
    assert GPTTokenizer.from_str(tokenizer.to_str()).encode("<|bos|>") == tokenizer.encode("<|bos|>")


def test_too_small_vocabulary_is_a_user_error():
    with pytest.raises(UserError, match="data.vocab_size=100 is too small"):
        train_bpe(TEXTS, 100)
    assert GPTTokenizer(train_bpe(TEXTS, MIN_VOCAB_SIZE)).vocab_size == MIN_VOCAB_SIZE


def test_evaluation_reports_bytes_per_token(tokenizer):
    metrics = evaluate_tokenizer(tokenizer, TEXTS)
    total_bytes = sum(len(t.encode()) for t in TEXTS)
    assert metrics["tokenizer/heldout_bytes"] == total_bytes
    assert metrics["tokenizer/bytes_per_token"] == pytest.approx(total_bytes / metrics["tokenizer/heldout_tokens"])
    assert metrics["tokenizer/bytes_per_token"] > 2.0  # the repeated text compresses well


def test_saved_tokenizer_json_stands_alone(tokenizer, tmp_path):
    """Plain `tokenizers.Tokenizer.from_file` treats "<|bos|>" in text as text, as the family does."""
    from tokenizers import Tokenizer

    path = tokenizer.save(tmp_path / "tokenizer.json")
    plain = Tokenizer.from_file(str(path))
    assert plain.encode(TRICKY, add_special_tokens=False).ids == tokenizer.encode(TRICKY)
    assert tokenizer.bos_id not in plain.encode("<|bos|>").ids
    assert plain.token_to_id(BOS) == tokenizer.bos_id and plain.decode([tokenizer.bos_id]) == BOS
    again = GPTTokenizer.from_file(path)
    ids = [again.bos_id, *again.encode("hi")]
    assert again.decode(ids, skip_special=True) == "hi" and again.to_str() == tokenizer.to_str()
