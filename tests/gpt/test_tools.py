"""Tool use while sampling: a closed tool call is run and its output injected before the model goes
on; output tokens are never sampled; a version-1 tokenizer (no tool tokens) still chats."""

import pytest
import torch

from datamodules.gpt.chat import render_for_reply
from datamodules.gpt.tokenizer import ASSISTANT_END, OUTPUT_END, OUTPUT_START, PYTHON_END, PYTHON_START
from lightning_modules.gpt import tools
from lightning_modules.gpt.serve.worker import Sampling
from lightning_modules.gpt.tools import MARK, OUTPUT, PYTHON, TEXT, generate_with_tools, reply_pieces, sample_with_tools, text_of
from tests.gpt.serving import tiny_model
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def scripted(monkeypatch, script: list[int]):
    """Make the sampler return the script's tokens, one per step, whatever the logits."""
    tokens = iter(script)
    monkeypatch.setattr(tools, "sample_next", lambda logits, *a: torch.tensor([next(tokens)] * logits.size(0)))


def test_a_closed_call_runs_and_its_output_is_injected(model, monkeypatch):
    net, tok = model
    code, answer = tok.encode("6 * 7"), tok.encode("The answer is 42.")
    output = tok.encode("42")
    forced = 2 + len(output)  # output_start, 42, output_end: the sampler is asked all the same
    script = [tok.id_of(PYTHON_START), *code, tok.id_of(PYTHON_END), *[0] * forced, *answer, tok.id_of(ASSISTANT_END)]
    scripted(monkeypatch, script)
    calls = []

    def tool(source):
        calls.append(source)
        return tools.run_in_sandbox(source)

    prompt = render_for_reply(tok, [{"role": "user", "content": "What is 6 times 7?"}])
    (row,) = sample_with_tools(net, tok, prompt, 60, run_tool=tool)
    assert calls == ["6 * 7"]
    start = len(code) + 2
    assert row.tokens[start : start + forced] == [tok.id_of(OUTPUT_START), *output, tok.id_of(OUTPUT_END)]
    assert row.forced_mask == [False] * start + [True] * forced + [False] * (len(answer) + 1)
    assert row.kinds[:start] == [MARK, *[PYTHON] * len(code), MARK] and row.kinds[start + 1] == OUTPUT
    assert row.done and text_of(tok, row) == "The answer is 42." and row.tool_calls == 1


def test_pieces_name_their_kind(model, monkeypatch):
    net, tok = model
    script = [tok.id_of(PYTHON_START), *tok.encode("print(2+3)"), tok.id_of(PYTHON_END), *[0] * 3, *tok.encode("5"), tok.id_of(ASSISTANT_END)]
    scripted(monkeypatch, script)
    prompt = render_for_reply(tok, [{"role": "user", "content": "2+3?"}])
    pieces = reply_pieces(net, tok, prompt, Sampling(40, 1.0, None), run_tool=lambda code: "5")
    texts = {}
    for kind, text in pieces:
        texts[kind] = texts.get(kind, "") + text
    assert texts == {PYTHON: "print(2+3)", OUTPUT: "5", TEXT: "5"}


def test_output_tokens_are_never_sampled_and_rows_stay_in_lockstep(model):
    net, tok = model
    prompt = render_for_reply(tok, [{"role": "user", "content": "hi"}])
    rows = sample_with_tools(net, tok, prompt, 40, num_samples=6, temperature=1.5, seed=0, run_tool=lambda code: "ok")
    banned = {tok.id_of(OUTPUT_START), tok.id_of(OUTPUT_END)}
    for row in rows:
        assert all(forced or t not in banned for t, forced in zip(row.tokens, row.forced_mask))
        assert len(row.tokens) == len(row.forced_mask) == len(row.kinds) <= 40


def test_same_seed_same_rows(model):
    net, tok = model
    prompt = render_for_reply(tok, [{"role": "user", "content": "hi"}])
    a = sample_with_tools(net, tok, prompt, 20, num_samples=3, seed=5, run_tool=lambda code: "x")
    b = sample_with_tools(net, tok, prompt, 20, num_samples=3, seed=5, run_tool=lambda code: "x")
    assert [r.tokens for r in a] == [r.tokens for r in b]


def test_tools_off_means_no_call_is_started(model):
    net, tok = model
    prompt = render_for_reply(tok, [{"role": "user", "content": "hi"}])
    rows = sample_with_tools(net, tok, prompt, 40, num_samples=4, temperature=2.0, seed=1, run_tool=None)
    assert all(tok.id_of(PYTHON_START) not in row.tokens for row in rows)


def test_last_expression_is_printed():
    assert tools.with_last_expression_printed("x = 4\nx * 3") == "x = 4\nprint(x * 3)"
    assert tools.with_last_expression_printed("print(1)") == "print(1)"
    assert tools.with_last_expression_printed("x = 1") == "x = 1"
    assert tools.run_in_sandbox("(17 + 25) * 2") == "84"
    assert "ZeroDivisionError" in tools.run_in_sandbox("1 / 0")


def test_a_version_1_checkpoint_still_chats_without_tools():
    from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint

    gpt = read_gpt_checkpoint(str(ROOT / "tests" / "fixtures" / "legacy_gpt_tiny.ckpt"))
    assert not gpt.tokenizer.has_tools and len(gpt.tokenizer.special_ids) == 5
    net = build_net(gpt).eval()
    prompt = render_for_reply(gpt.tokenizer, [{"role": "user", "content": "hello"}])
    room = net.config.context_len - len(prompt)
    assert room > 0
    pieces = list(reply_pieces(net, gpt.tokenizer, prompt, Sampling(min(12, room), 0.8, 20, 0)))
    assert pieces and all(kind == TEXT for kind, _ in pieces)


def test_prompt_too_long_is_refused(model):
    net, tok = model
    with pytest.raises(ValueError, match="positions"):
        next(generate_with_tools(net, tok, [0] * 250, 10))
