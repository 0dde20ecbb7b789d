"""Helpers of the serving tests: a tiny random GPT with a real tokenizer, a uvicorn server on a
free loopback port in a thread, and an SSE reader over http.client."""

import contextlib
import http.client
import json
import socket
import threading
import time

import torch

from datamodules.gpt.tokenizer import GPTTokenizer, train_bpe
from lightning_modules.gpt.nets import GPT, GPTConfig

TEXTS = ["What is 12 plus 30? The answer is 42. " * 30, "def add(a, b):\n    return a + b\nprint(add(2, 3))\n" * 30]


def tiny_model(seed: int = 0) -> tuple[GPT, GPTTokenizer]:
    tokenizer = GPTTokenizer(train_bpe(TEXTS, 320))
    torch.manual_seed(seed)
    net = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, sequence_len=64, n_layer=1, n_head=2, n_embd=32, max_positions=256))
    return net.eval(), tokenizer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app, worker=None):
    """Serve `app` on 127.0.0.1:<free port>; yields the port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if worker is not None:
            worker.stop()


def request(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 60):
    """(status, parsed JSON or text, response headers) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    raw = response.read().decode()
    connection.close()
    try:
        return response.status, json.loads(raw), dict(response.getheaders())
    except json.JSONDecodeError:
        return response.status, raw, dict(response.getheaders())


def stream(port: int, path: str, body: dict, headers: dict | None = None, timeout: float = 60):
    """Yield (seconds since the request, data of each server-sent event) as they arrive."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    try:
        buffer = b""
        while True:
            chunk = response.read1(65536)
            if not chunk:
                return
            buffer += chunk
            while b"\n\n" in buffer:
                line, buffer = buffer.split(b"\n\n", 1)
                if line.startswith(b"data: "):
                    payload = line[6:].decode()
                    yield time.perf_counter() - started, payload if payload == "[DONE]" else json.loads(payload)
    finally:
        connection.close()
