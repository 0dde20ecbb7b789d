"""task=serve on a shared machine: each attack of docs/gpt.md's "Security" table, as an attacker on
this machine would make it, and what the user sees instead."""

import functools
import http.client
import json
import socket
import threading
import time

import pytest
import torch

from hylab.errors import UserError
from lightning_modules.gpt import tools
from lightning_modules.gpt.serve.protocol import fit_prompt
from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.task import access_token, build_server, serve_settings
from tests.gpt.serving import request, running, stream, tiny_model
from tests.helpers import run_cli, run_in_process

HELLO = {"messages": [{"role": "user", "content": "What is 12 plus 30?"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def server(model):
    app, worker = build_server(*model, "tiny", ServeSettings(tools=False, allowed_hosts=["chat.example"]))
    with running(app, worker) as port:
        yield port, worker


def test_a_foreign_host_a_foreign_origin_and_a_simple_post_are_refused(server):
    port, worker = server
    submitted, submit = [], worker.submit
    worker.submit = lambda job: submitted.append(job) or submit(job)
    post = functools.partial(request, port, "POST", "/v1/chat/completions", HELLO)
    status, reply, _ = post(headers={"Host": "attacker.example"})  # DNS rebinding: a foreign name resolving to 127.0.0.1
    assert status == 421 and reply["error"]["code"] == "wrong_host"
    assert request(port, "GET", "/", headers={"Host": "attacker.example:8000"})[0] == 421
    assert post(headers={"Host": f"localhost:{port}"})[0] == 200 and post(headers={"Host": "chat.example"})[0] == 200
    status, reply, _ = post(headers={"Origin": "https://attacker.example"})
    assert status == 403 and reply["error"]["code"] == "forbidden_origin"
    assert post(headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    status, reply, _ = post(headers={"Content-Type": "text/plain"})  # a cross-origin form needs no preflight
    assert status == 415 and "application/json" in reply["error"]["message"]
    worker.submit = submit
    assert len(submitted) == 3  # the three accepted requests; nothing refused reached the worker


def test_deep_nesting_and_too_many_messages_are_400(server):
    port, _ = server
    deep = b'{"messages": ' + b"[" * 30000 + b"]" * 30000 + b"}"  # gave a 500 (RecursionError)
    status, reply, _ = request(port, "POST", "/v1/chat/completions", deep)
    assert status == 400 and "nests deeper than 16" in reply["error"]["message"]
    many = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 200 + [{"role": "user", "content": "q"}]
    status, reply, _ = request(port, "POST", "/v1/chat/completions", {"messages": many})
    assert status == 400 and reply["error"]["code"] == "too_many_messages"


def test_trimming_is_linear_and_does_not_block_the_server(model):
    net, tokenizer = model
    calls = []
    encode = tokenizer.encode

    class Counting:
        def __getattr__(self, name):
            return getattr(tokenizer, name)

        def encode(self, text):
            calls.append(len(text))
            return encode(text)

    many = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello there"} for i in range(1271)]
    prompt, budget = fit_prompt(Counting(), many, 256, None, None)
    assert len(calls) == 1271 and len(prompt) + budget == 256  # each message encoded once
    app, worker = build_server(net, tokenizer, "tiny", ServeSettings(tools=False, max_messages=2000))
    with running(app, worker) as port:
        body = {"messages": many, "max_tokens": 4}
        assert len(json.dumps(body)) < 65536
        done = []
        thread = threading.Thread(target=lambda: done.append(request(port, "POST", "/v1/chat/completions", body)[0]))
        thread.start()
        waits = []
        while thread.is_alive():
            started = time.perf_counter()
            assert request(port, "GET", "/health")[0] == 200
            waits.append(time.perf_counter() - started)
        thread.join()
    assert done == [200] and max(waits) < 1.0, waits


def slowed(worker, delay_s=0.01):
    original = worker.make_stream

    def make(prompt, sampling):
        for piece in original(prompt, sampling):
            time.sleep(delay_s)
            yield piece
        return "length"

    worker.make_stream = make


def test_the_non_streaming_endpoint_stops_when_its_client_leaves(model):
    app, worker = build_server(*model, "tiny", ServeSettings(tools=False))
    slowed(worker)
    with running(app, worker) as port:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("POST", "/v1/chat/completions", body=json.dumps({**HELLO, "max_tokens": 200}),
                           headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + 5
        while worker.load["active"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.load["active"] == 1
        connection.sock.shutdown(socket.SHUT_RDWR)  # the client goes away mid-reply (200 tokens take 2 s here)
        connection.close()
        left = time.monotonic()
        while worker.load["active"] and time.monotonic() < left + 5:
            time.sleep(0.02)
        assert worker.load["active"] == 0 and time.monotonic() - left < 1.5


def test_a_tool_call_does_not_stall_the_other_replies(model, monkeypatch):
    """One reply calls a tool that takes 1.5 s; another reply, started during the call, streams to
    its end before the call returns (the call runs in the tool pool, not in the generation thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from datamodules.gpt.tokenizer import ASSISTANT_END, PYTHON_END, PYTHON_START

    net, tok = model
    script = iter([tok.id_of(PYTHON_START), *tok.encode("6 * 7"), tok.id_of(PYTHON_END), *[0] * 3, *tok.encode("42"), tok.id_of(ASSISTANT_END)])
    current, sample = [None], tools.sample_next
    monkeypatch.setattr(tools, "sample_next", lambda logits, *a: torch.tensor([next(script)]) if current[0] == "tool" else sample(logits, *a))
    started, finished = threading.Event(), threading.Event()

    def slow_tool(code):
        started.set()
        time.sleep(1.5)
        finished.set()
        return "42"

    pool = ThreadPoolExecutor(2)
    app, worker = build_server(net, tok, "tiny", ServeSettings())
    plain = functools.partial(tools.reply_pieces, net, tok, run_tool=None)
    calling = functools.partial(tools.reply_pieces, net, tok, run_tool=functools.partial(pool.submit, slow_tool))

    def make(prompt, sampling):  # the reply asking for 6 * 7 calls the tool, the other one does not
        inner, tag = (calling(prompt, sampling), "tool") if sampling.seed == 1 else (plain(prompt, sampling), None)
        while True:
            current[0] = tag
            try:
                piece = next(inner)
            except StopIteration as end:
                return end.value
            yield piece

    worker.make_stream = make
    with running(app, worker) as port:
        tool_events = []
        thread = threading.Thread(target=lambda: tool_events.extend(e for _, e in stream(port, "/api/chat", {**HELLO, "max_tokens": 30, "seed": 1})))
        thread.start()
        assert started.wait(10)
        other = [e for _, e in stream(port, "/api/chat", {**HELLO, "max_tokens": 30, "seed": 2, "temperature": 1.0})]
        assert other[-1]["type"] == "done" and other[-1]["usage"]["completion_tokens"] > 5
        assert not finished.is_set()  # the other reply finished while the tool was still running
        thread.join(10)
    assert "".join(e["text"] for e in tool_events if e.get("kind") == "output") == "42"


def test_the_token_comes_from_the_environment_or_a_file(monkeypatch, tmp_path):
    from omegaconf import OmegaConf

    with pytest.raises(UserError, match="serve.token would be written into the run folder.*HYLAB_SERVE_TOKEN.*serve.token_file") as err:
        serve_settings(OmegaConf.create({"serve": {"token": "s3cret"}}))
    assert "\n" not in str(err.value)
    monkeypatch.delenv("HYLAB_SERVE_TOKEN", raising=False)
    with pytest.raises(UserError, match="HYLAB_SERVE_TOKEN"):
        access_token(ServeSettings(host="0.0.0.0"))
    monkeypatch.setenv("HYLAB_SERVE_TOKEN", "from-env")
    assert access_token(ServeSettings(host="0.0.0.0")) == "from-env"
    (tmp_path / "token").write_text("from-file\n")
    assert access_token(ServeSettings(host="0.0.0.0", token_file=str(tmp_path / "token"))) == "from-file"
    with pytest.raises(UserError, match="no such file"):
        access_token(ServeSettings(token_file=str(tmp_path / "none")))


@pytest.mark.slow
def test_a_token_on_the_command_line_is_refused_and_written_nowhere(tmp_path):
    done = run_cli(["experiment=gpt_tiny", "task=serve", "serve.token=s3cret-value"], tmp_path, runs=1)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: serve.token would be written")
    # refused before the run starts (with the other settings, before torch): no file at all
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.slow
def test_secret_settings_are_redacted_from_the_record_and_the_checkpoint(tmp_path):
    overrides = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1", "test_after_fit=false",
                 "+hub_token=s3cret-value", "callbacks.early_stopping=null", "callbacks.lr_monitor=null"]
    _, record = run_in_process(overrides, tmp_path / "run")
    assert record["status"] == "completed"
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files)
    assert [p for p in files if b"s3cret-value" in p.read_bytes()] == []
    stored = torch.load(record["checkpoints"]["last"], weights_only=True)["hylab"]["config"]
    assert stored["hub_token"] == "<redacted>"
