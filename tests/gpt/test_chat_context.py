"""Chat stays inside the trained context: the oldest exchanges go first, and a single message that
is still too long keeps <|bos|><|user_start|> and its end."""

import pytest

from datamodules.gpt.tokenizer import ASSISTANT_START, BOS, USER_END, USER_START, GPTTokenizer, train_bpe
from lightning_modules.gpt.tasks import fit_to_context


@pytest.fixture(scope="module")
def tokenizer() -> GPTTokenizer:
    return GPTTokenizer(train_bpe(["hello there, how are you? fine thanks. " * 50], 300))


def test_oldest_exchanges_are_dropped_first(tokenizer):
    conversation = [{"role": "user", "content": "hello " * 20}, {"role": "assistant", "content": "fine " * 20},
                    {"role": "user", "content": "how are you?"}]
    prompt = fit_to_context(tokenizer, conversation, max_new_tokens=8, context_len=32)
    assert len(conversation) == 1 and len(prompt) <= 32 - 8
    assert prompt[:2] == [tokenizer.id_of(BOS), tokenizer.id_of(USER_START)]


def test_an_over_long_message_keeps_its_frame(tokenizer):
    conversation = [{"role": "user", "content": "hello there " * 100 + "the end"}]
    prompt = fit_to_context(tokenizer, conversation, max_new_tokens=10, context_len=40)
    assert len(prompt) == 30
    assert prompt[:2] == [tokenizer.id_of(BOS), tokenizer.id_of(USER_START)]
    assert prompt[-2:] == [tokenizer.id_of(USER_END), tokenizer.id_of(ASSISTANT_START)]
    assert tokenizer.decode(prompt[2:-2]).endswith("the end")
