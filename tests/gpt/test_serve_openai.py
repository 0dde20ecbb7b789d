"""task=serve through OpenAI's own Python client (`openai`), with its defaults: what a user of
that client sees, call by call (the list in docs/gpt.md, "Serving")."""

import json
import logging

import openai
import pytest

from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.task import build_server, model_identity
from tests.gpt.serving import request, running, tiny_model

QUESTION = "What is 12 plus 30?"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A tiny random model named as task=serve names a checkpoint of a gpt_tiny run."""
    run = tmp_path_factory.mktemp("run")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "metrics.json").write_text(json.dumps({"experiment": "gpt_tiny", "config_hash": "0123456789abcdef"}))
    name, created = model_identity(str(run / "checkpoints" / "last.ckpt"), None)
    net, tokenizer = tiny_model()
    app, worker = build_server(net, tokenizer, name, ServeSettings(tools=False), created=created)
    with running(app, worker) as port:
        yield port, name, created


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{served[0]}/v1", api_key="unused", max_retries=0, timeout=60)


def ask(client, content=QUESTION, **extra):
    messages = extra.pop("messages", [{"role": "user", "content": content}])
    return client.chat.completions.create(model=extra.pop("model", "gpt_tiny-01234567"), messages=messages, **extra)


def test_models_list_and_retrieve(client, served):
    _, name, created = served
    assert name == "gpt_tiny-01234567"  # the experiment and the short training hash
    (card,) = client.models.list().data
    assert card.id == name and card.created == created > 0 and card.owned_by == "hylab"
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.status_code == 404 and err.value.body["code"] == "model_not_found"


def test_completion_as_typed_and_the_same_seed_gives_the_same_answer(client):
    first = ask(client, max_completion_tokens=12, seed=7, temperature=1.0)
    again = ask(client, max_completion_tokens=12, seed=7, temperature=1.0)
    other = ask(client, max_completion_tokens=12, seed=8, temperature=1.0)
    assert first.choices[0].message.content == again.choices[0].message.content != other.choices[0].message.content
    assert first.object == "chat.completion" and first.model == "gpt_tiny-01234567" and first.choices[0].message.role == "assistant"
    assert first.usage.completion_tokens <= 12 and first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    plain = ask(client)  # nothing but the question: the reply gets what the context leaves
    assert plain.choices[0].finish_reason in ("stop", "length") and plain.usage.completion_tokens > 12


def test_streamed_with_usage_equals_the_whole_reply(client):
    whole = ask(client, max_tokens=16, seed=3)
    chunks = list(ask(client, max_tokens=16, seed=3, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens
    no_usage = list(ask(client, max_tokens=4, stream=True))
    assert all(getattr(c, "usage", None) is None for c in no_usage)


def test_stop_as_a_string_and_a_list(client):
    whole = ask(client, max_tokens=40, temperature=0).choices[0].message.content
    stop = whole[6:8]
    expected = whole[: whole.find(stop)]
    for given in (stop, ["never-in-the-reply", stop]):
        for streamed in (False, True):
            if streamed:
                chunks = list(ask(client, max_tokens=40, temperature=0, stop=given, stream=True))
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
            else:
                reply = ask(client, max_tokens=40, temperature=0, stop=given)
                text, finish = reply.choices[0].message.content, [reply.choices[0].finish_reason]
            assert text == expected and finish == ["stop"], (given, streamed)


def test_n_choices_and_top_p(client):
    reply = ask(client, max_tokens=8, n=3, seed=11, temperature=1.0)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.choices[1].message.content == ask(client, max_tokens=8, seed=12, temperature=1.0).choices[0].message.content
    streamed = list(ask(client, max_tokens=8, n=2, seed=11, temperature=1.0, stream=True))
    assert {c.choices[0].index for c in streamed if c.choices} == {0, 1}
    greedy = ask(client, max_tokens=12, temperature=0).choices[0].message.content
    assert ask(client, max_tokens=12, temperature=1.0, top_p=1e-6, seed=5).choices[0].message.content == greedy


def test_system_developer_roles_and_text_parts(client):
    joined = ask(client, "Be brief.\n\nWhat is 12 plus 30?", max_tokens=12, temperature=0).choices[0].message.content
    for role in ("system", "developer"):
        parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "12 plus 30?"}]
        messages = [{"role": role, "content": "Be brief."}, {"role": "user", "content": parts}]
        assert ask(client, messages=messages, max_tokens=12, temperature=0).choices[0].message.content == joined


@pytest.mark.parametrize("extra, says", [
    ({"content": "a b c d " * 400}, "context"),
    ({"max_tokens": 100000}, "max_tokens=100000"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "'tools' is not supported"),
    ({"logprobs": True}, "'logprobs' is not supported"),
    ({"response_format": {"type": "json_object"}}, "'response_format' is not supported"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "reads text only"),
    ({"temperature": 2.5}, "'temperature' must be"),
], ids=["past_context", "too_many_tokens", "tools", "logprobs", "response_format", "image", "temperature"])
def test_what_we_cannot_do_is_a_400_that_says_so(client, extra, says):
    with pytest.raises(openai.BadRequestError) as err:
        ask(client, **extra)
    assert err.value.status_code == 400 and says in err.value.body["message"]


def test_404_and_405_in_the_error_shape(served):
    port = served[0]
    status, reply, _ = request(port, "GET", "/v1/engines")
    assert status == 404 and reply["error"]["type"] == "not_found_error" and "/v1/engines" in reply["error"]["message"]
    status, reply, _ = request(port, "GET", "/v1/chat/completions")
    assert status == 405 and reply["error"]["code"] == "method_not_allowed"


def test_one_access_log_line_per_request(client, caplog):
    caplog.set_level(logging.INFO, logger="hylab.serve")
    client.models.list()
    ask(client, max_tokens=4)
    list(ask(client, max_tokens=4, stream=True))
    with pytest.raises(openai.BadRequestError):
        ask(client, logprobs=True)
    lines = [r.getMessage() for r in caplog.records if r.name == "hylab.serve"]
    assert len(lines) == 4, lines
    assert '"GET /v1/models" 200' in lines[0] and '"POST /v1/chat/completions" 400' in lines[3]
