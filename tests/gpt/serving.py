"""Helpers of the serving tests: a tiny random GPT with a real (version-2) tokenizer; the HTTP
helpers are the serve package's own client."""

import torch

from datamodules.gpt.tokenizer import GPTTokenizer, train_bpe
from lightning_modules.gpt.nets import GPT, GPTConfig
from lightning_modules.gpt.serve.client import request, running, stream  # noqa: F401 (used by the tests)

TEXTS = ["What is 12 plus 30? The answer is 42. " * 30, "def add(a, b):\n    return a + b\nprint(add(2, 3))\n" * 30]


def tiny_model(seed: int = 0) -> tuple[GPT, GPTTokenizer]:
    tokenizer = GPTTokenizer(train_bpe(TEXTS, 320))
    torch.manual_seed(seed)
    net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, sequence_len=256, n_layer=1, n_head=2, n_embd=32))
    return net.eval(), tokenizer
