"""task=serve over real HTTP: the page, streamed chat, the OpenAI-style endpoint, errors and limits,
replies as typed (no max_tokens), access token, cancellation, several chats at once."""

import threading
import time

import pytest

from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.task import build_server
from tests.gpt.serving import request, running, stream, tiny_model

HELLO = {"messages": [{"role": "user", "content": "What is 12 plus 30?"}], "max_tokens": 24, "temperature": 0.8, "seed": 1}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def server(model):
    net, tokenizer = model
    settings = ServeSettings(max_new_tokens=64, max_message_chars=500, max_body_bytes=4096, tools=False)
    app, worker = build_server(net, tokenizer, "tiny-test", settings)
    with running(app, worker) as port:
        yield port


def test_page_health_and_info(server):
    status, page, headers = request(server, "GET", "/")
    assert status == 200 and "<title>hylab GPT chat</title>" in page and headers["content-type"].startswith("text/html")
    assert request(server, "GET", "/health")[1]["status"] == "ok"
    info = request(server, "GET", "/api/info")[1]
    assert info["model"] == "tiny-test" and info["parameters"] > 0 and info["context"] == 256
    assert request(server, "GET", "/v1/models")[1]["data"][0]["id"] == "tiny-test"


def test_chat_streams_tokens_then_done(server):
    events = [event for _, event in stream(server, "/api/chat", HELLO)]
    tokens = [e for e in events if e["type"] == "token"]
    assert len(tokens) > 3 and all(e["kind"] == "text" for e in tokens)
    assert events[-1]["type"] == "done" and events[-1]["finish_reason"] in ("stop", "length")
    assert events[-1]["usage"]["completion_tokens"] >= len(tokens)


def test_openai_endpoint_streamed_and_not_agree(server):
    status, reply, _ = request(server, "POST", "/v1/chat/completions", HELLO)
    assert status == 200 and reply["object"] == "chat.completion"
    text = reply["choices"][0]["message"]["content"]
    assert reply["choices"][0]["message"]["role"] == "assistant" and reply["usage"]["prompt_tokens"] > 0
    chunks = [event for _, event in stream(server, "/v1/chat/completions", {**HELLO, "stream": True})]
    assert chunks[-1] == "[DONE]" and chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert streamed == text  # same seed, same reply
    assert chunks[-2]["choices"][0]["finish_reason"] == reply["choices"][0]["finish_reason"]


def test_without_max_tokens_a_reply_gets_the_room_the_context_leaves(model):
    """As a person or curl sends it: no max_tokens. A random net rarely stops, so it runs to the
    end of the context (256 positions), which no server default cuts short."""
    net, tokenizer = model
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(tools=False))
    question = {"messages": [{"role": "user", "content": "What is 12 plus 30?"}], "temperature": 0}
    with running(app, worker) as port:
        status, reply, _ = request(port, "POST", "/v1/chat/completions", question)
        assert status == 200, reply
        usage = reply["usage"]
        assert reply["choices"][0]["finish_reason"] == "stop" or usage["total_tokens"] == 256
        events = [e for _, e in stream(port, "/api/chat", question)]
        assert events[-1]["type"] == "done" and events[-1]["usage"] == usage


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, "invalid_json"),
    (b"[1, 2]", 400, "invalid_json"),
    (b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}", 400, "invalid_json"),
    ({**HELLO, "max_tokens": float("inf")}, 400, "invalid_parameter"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": NaN}', 400, "invalid_parameter"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}', 400, "invalid_parameter"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', 400, "invalid_parameter"),
    ({**HELLO, "temperature": 2.5}, 400, "invalid_parameter"),
    ({**HELLO, "seed": 2**63}, 400, "invalid_parameter"),
    ({**HELLO, "top_p": 1.5}, 400, "invalid_parameter"),
    ({"messages": []}, 400, "invalid_messages"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "invalid_messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_messages"),
    ({**HELLO, "temperature": "hot"}, 400, "invalid_parameter"),
    ({**HELLO, "top_k": 0}, 400, "invalid_parameter"),
    ({**HELLO, "max_tokens": 65}, 400, "max_tokens_too_large"),
    ({"messages": [{"role": "user", "content": "x" * 501}]}, 413, "message_too_long"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "y"}]}, 400, "invalid_messages"),
    (b'{"messages": [{"role": "user", "content": "' + b"a" * 5000 + b'"}]}', 413, "body_too_large"),
], ids=["malformed", "not_object", "nested_1000", "max_tokens_inf", "max_tokens_nan", "max_tokens_1e400", "temperature_nan",
        "temperature_2.5", "seed_2**63", "top_p", "no_messages", "assistant_last", "bad_role", "temperature", "top_k", "max_tokens",
        "long_message", "ends_with_assistant", "big_body"])
def test_errors_are_json(server, body, status, code):
    """Every bad request is a 4xx in OpenAI's error shape naming what is wrong, never a 500."""
    for path in ("/api/chat", "/v1/chat/completions"):
        got, reply, _ = request(server, "POST", path, body)
        assert got == status and reply["error"]["code"] == code, reply
        assert reply["error"]["message"] and reply["error"]["type"] == "invalid_request_error"
        if code == "invalid_parameter":
            assert f"'{reply['error']['param']}'" in reply["error"]["message"]


def test_conversation_over_the_context_is_400_and_old_turns_are_dropped(model):
    """Context 80: the prompt's frame is 4 tokens, so a message of n tokens leaves 76 - n."""
    net, tokenizer = model
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(max_context=80, max_new_tokens=16))
    turn = "a b c d e f g h " * 3
    over = "a b c d e f g h " * 5  # 71 tokens: the prompt fits, 16 more do not
    assert len(tokenizer.encode(turn)) <= 60 < len(tokenizer.encode(over)) < 76
    with running(app, worker) as port:
        def ask(messages, **extra):
            return request(port, "POST", "/v1/chat/completions", {"messages": messages, **extra})[:2]

        status, reply = ask([{"role": "user", "content": over * 2}])
        assert status == 400 and reply["error"]["code"] == "context_length_exceeded"  # the prompt alone is past the context
        assert ask([{"role": "user", "content": turn}], max_tokens=16)[0] == 200
        status, reply = ask([{"role": "user", "content": over}], max_tokens=16)
        assert status == 400 and "max_tokens=16" in reply["error"]["message"]  # asked for more than fits
        status, reply = ask([{"role": "user", "content": over}])  # no max_tokens: the room that is left
        assert status == 200 and reply["usage"]["total_tokens"] <= 80
        history = [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}] * 3
        status, reply = ask([*history, {"role": "user", "content": "hi"}], max_tokens=16)
        assert status == 200 and reply["usage"]["prompt_tokens"] <= 80 - 16


def test_a_token_guards_everything_but_health(model):
    net, tokenizer = model
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(max_new_tokens=8), token="s3cret")
    with running(app, worker) as port:
        assert request(port, "GET", "/health")[0] == 200
        status, reply, _ = request(port, "POST", "/v1/chat/completions", HELLO | {"max_tokens": 8})
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"
        assert request(port, "GET", "/api/info", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(port, "GET", "/api/info", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(port, "GET", "/?token=s3cret")[0] == 200


def test_the_yaml_holds_the_settings_defaults():
    import yaml

    from hylab.settings import parse_settings
    from tests.helpers import CONF_DIR

    values = yaml.safe_load((CONF_DIR / "serve" / "gpt.yaml").read_text())
    assert values.pop("token") is None  # only there to refuse serve.token=... with a pointer to the fix
    assert parse_settings(ServeSettings, values, "serve") == ServeSettings()


def test_timeout_and_disconnect_end_the_reply(model):
    net, tokenizer = model
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(request_timeout_s=0.05, max_new_tokens=200))
    slow = worker.make_stream

    def slowed(prompt, sampling):
        for piece in slow(prompt, sampling):
            time.sleep(0.01)
            yield piece
        return "length"

    worker.make_stream = slowed
    with running(app, worker) as port:
        events = [e for _, e in stream(port, "/api/chat", {**HELLO, "max_tokens": 200})]
        assert events[-1]["finish_reason"] == "timeout"
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(max_new_tokens=200))
    worker.make_stream = slowed
    with running(app, worker) as port:
        for _, event in stream(port, "/api/chat", {**HELLO, "max_tokens": 200, "temperature": 0}):
            if event["type"] == "token":
                break  # the client goes away after its first token
        deadline = time.monotonic() + 5
        while worker.load["active"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.load == {"active": 0, "queued": 0}


def test_a_tool_call_streams_as_python_then_output(model, monkeypatch):
    from datamodules.gpt.tokenizer import ASSISTANT_END, PYTHON_END, PYTHON_START
    from tests.gpt.test_tools import scripted

    net, tok = model
    script = [tok.id_of(PYTHON_START), *tok.encode("6 * 7"), tok.id_of(PYTHON_END), *[0] * 3, *tok.encode("It is 42."), tok.id_of(ASSISTANT_END)]
    scripted(monkeypatch, script)
    app, worker = build_server(net, tok, "tiny", ServeSettings(max_new_tokens=40))
    with running(app, worker) as port:
        assert request(port, "GET", "/api/info")[1]["tools"] is True
        events = [e for _, e in stream(port, "/api/chat", {**HELLO, "max_tokens": 40})]
    kinds = [e["kind"] for e in events if e["type"] == "token"]
    assert kinds[0] == "python" and "output" in kinds and kinds[-1] == "text"
    text = {kind: "".join(e["text"] for e in events if e.get("kind") == kind) for kind in set(kinds)}
    assert text == {"python": "6 * 7", "output": "42", "text": "It is 42."}
    assert events[-1]["finish_reason"] == "stop"


def test_eight_chats_at_once_all_stream(server):
    results = [None] * 8

    def chat(i):
        events = list(stream(server, "/api/chat", {**HELLO, "seed": i, "max_tokens": 12}))
        results[i] = (events[0][0], events[-1][0], events[-1][1])

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None and r[2]["type"] == "done" for r in results)
    assert all(first <= full for first, full, _ in results)
