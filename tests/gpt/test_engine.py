"""KV-cache generation draws exactly what full recomputation draws; streaming decode is exact."""

import pytest
import torch

from lightning_modules.gpt.engine import KVCache, StreamingDecoder, generate_tokens, sample_next
from lightning_modules.gpt.nets import GPT, GPTConfig


@pytest.fixture(scope="module", params=[None, 2], ids=["mha", "gqa"])
def net(request) -> GPT:
    torch.manual_seed(0)
    net = GPT(GPTConfig(vocab_size=96, sequence_len=64, n_layer=2, n_head=4, n_kv_head=request.param, n_embd=32))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


PROMPT = [0, 5, 17, 33, 2, 9]


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=0.0), dict(temperature=1.0, seed=7), dict(temperature=0.9, top_k=10, seed=3, num_samples=4)],
    ids=["greedy", "sampled", "top_k_batch"],
)
def test_cache_and_no_cache_generate_the_same_tokens(net, settings):
    cached = generate_tokens(net, PROMPT, 30, use_cache=True, **settings)
    recomputed = generate_tokens(net, PROMPT, 30, use_cache=False, **settings)
    assert cached == recomputed
    assert len(cached) == settings.get("num_samples", 1) and len(cached[0]) == 30
    if settings.get("num_samples", 1) > 1:
        assert len({tuple(row) for row in cached}) > 1  # rows sample independently


def test_prefill_in_chunks_matches_one_prefill(net):
    tokens = torch.tensor([PROMPT + [4, 8, 15, 16]])
    whole = net(tokens)
    cache = KVCache(net, 1, 16, torch.float32, torch.device("cpu"))
    first = net(tokens[:, :6], kv_cache=cache)
    second = net(tokens[:, 6:], kv_cache=cache)  # 4 queries against 10 cached keys: the masked path
    assert cache.pos == 10
    assert torch.allclose(torch.cat([first, second], dim=1), whole, atol=1e-5)


def test_stop_tokens_and_limits(net):
    row = generate_tokens(net, PROMPT, 40, temperature=0.0)[0]
    stop = row[5]
    cut = generate_tokens(net, PROMPT, 40, temperature=0.0, stop_ids=[stop])[0]
    assert cut == row[: row.index(stop) + 1]
    assert max(generate_tokens(net, PROMPT, 40, temperature=1.0, seed=0, vocab_limit=10)[0]) < 10
    with pytest.raises(ValueError, match="exceed"):
        generate_tokens(net, PROMPT, net.config.max_positions)


def test_generation_stays_inside_the_trained_context():
    """A rotary table longer than sequence_len (old checkpoints have 4x) is not a longer budget."""
    net = GPT(GPTConfig(vocab_size=48, sequence_len=16, n_layer=1, n_head=2, n_embd=16, max_positions=64)).eval()
    assert net.config.context_len == 16 and GPTConfig(sequence_len=16, n_head=2, n_embd=16).max_positions == 16
    assert len(generate_tokens(net, PROMPT, 16 - len(PROMPT))[0]) == 16 - len(PROMPT)
    with pytest.raises(ValueError, match="16 positions the model was trained on"):
        generate_tokens(net, PROMPT, 17 - len(PROMPT))


def test_sampling_rules():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert sample_next(logits, 0.0, None, None).item() == 1
    generator = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 5.0, 2, generator).item() for _ in range(50)} == {1, 3}  # only the top 2
    nucleus = torch.log(torch.tensor([[0.1, 0.5, 0.15, 0.25]]))  # sorted: 0.5, 0.25 | 0.15, 0.1
    assert {sample_next(nucleus, 1.0, None, generator, 0.7).item() for _ in range(200)} == {1, 3}  # 0.5 < 0.7 <= 0.75
    assert {sample_next(nucleus, 1.0, None, generator, 0.5).item() for _ in range(50)} == {1}


def test_streaming_decoder_holds_back_half_characters():
    text = "né 日本 🎉!"
    raw = list(text.encode("utf-8"))
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # one token per byte
    decoder = StreamingDecoder(decode)
    pieces = [decoder.push(b) for b in raw]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)
