"""A small stdlib client of task=serve and a server in a thread: what the tests and the latency
bench (`python -m bench.gpt_serve`) use to talk to it the way any HTTP client does."""

import contextlib
import http.client
import json
import socket
import threading
import time


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(app, worker=None):
    """Serve `app` on 127.0.0.1:<free port> in a thread; yields the port; stops the worker after."""
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
    if response.status != 200:
        raise RuntimeError(f"{path}: HTTP {response.status}: {response.read()[:500]!r}")
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
