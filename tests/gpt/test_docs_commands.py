"""The sampling and serving commands of docs/gpt.md, copied from the file and run as typed on a
tiny gpt_tiny checkpoint: only `<...>` placeholders are filled in, `paths.log_dir` points at a
temporary folder, and the server's port 8000 becomes a free one (other runs may hold 8000)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from lightning_modules.gpt.serve.client import free_port, request
from tests.gpt.test_runs import tiny_base
from tests.helpers import ROOT, run_in_process

COMMAND = re.compile(r"^(HYLAB_SERVE_TOKEN=\S+ )?(uv run python run\.py .*task=(serve|generate|chat)\b.*|curl .*)$")
TOKEN = "t0ken-for-the-test"
START_S = 240  # run.py imports torch and Lightning: tens of seconds on a loaded 2-core machine


def documented() -> list[str]:
    lines, inside = [], False
    for line in (ROOT / "docs" / "gpt.md").read_text().splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
        elif inside and COMMAND.match(line.strip()):
            lines.append(line.strip())
    return lines


def filled(command: str, ckpt: str, log_dir, port: int) -> str:
    command = re.sub(r"[^\s=]*<run>/checkpoints/last\.ckpt|<ckpt>", ckpt, command).replace("<secret>", TOKEN)
    command = command.replace("8000", str(port))
    if "run.py" in command:
        command = command.split("   #")[0] + f" paths.log_dir={log_dir}" + (f" serve.port={port}" if "task=serve" in command else "")
    if shutil.which("uv") is None:
        command = command.replace("uv run python", sys.executable)
    return command


def shell(command: str, **kwargs):
    env = {**os.environ, "UV_NO_SYNC": "1", "UV_OFFLINE": "1"}  # the environment as it is: no install during a test
    return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, text=True, start_new_session=True, **kwargs)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gpt_docs_data")
    run = tmp_path_factory.mktemp("base") / "run"
    _, record = run_in_process([*tiny_base(data_dir), "data.sequence_len=128", "trainer.max_steps=2", "trainer.val_check_interval=2"], run)
    return record["checkpoints"]["last"], record["config_hash"]


def test_docs_list_the_commands():
    kinds = [re.search(r"task=(\w+)", c).group(1) if "run.py" in c else "curl" for c in documented()]
    assert sorted(kinds) == ["chat", "curl", "generate", "serve", "serve"], documented()


@pytest.mark.slow
def test_generate_and_chat_as_typed(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    for command in documented():
        if "task=generate" in command or "task=chat" in command:
            process = shell(filled(command, ckpt, tmp_path, 0), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = process.communicate("What is 12 plus 30?\n/exit\n", timeout=START_S)
            assert process.returncode == 0, err[-3000:]
            if "task=generate" in command:
                assert out.count("--- sample") == 3 and "def parse(" in out
            else:
                assert out.count("gpt> ") == 1
    (generations,) = tmp_path.rglob("generations.json")
    texts = json.loads(generations.read_text())["texts"]
    assert len(texts) == 3 and all(len(t) > len("def parse(") for t in texts)  # no max_new_tokens: the context's room


@pytest.mark.slow
def test_serve_and_curl_as_typed(checkpoint, tmp_path):
    ckpt, config_hash = checkpoint
    serve_commands = [c for c in documented() if "task=serve" in c]
    (curl,) = [c for c in documented() if c.startswith("curl")]
    for command in serve_commands:
        port = free_port()
        server = shell(filled(command, ckpt, tmp_path, port), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + START_S
            while True:
                assert server.poll() is None, server.stderr.read()[-3000:]
                try:
                    if request(port, "GET", "/health", timeout=2)[0] == 200:
                        break
                except OSError:
                    pass
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
            auth = {"Authorization": f"Bearer {TOKEN}"} if TOKEN in filled(command, ckpt, tmp_path, port) else {}
            status, models, _ = request(port, "GET", "/v1/models", headers=auth)
            assert status == 200 and models["data"][0]["id"] == f"gpt_tiny-{config_hash[:8]}"
            if auth:
                assert request(port, "GET", "/v1/models")[0] == 401
                continue
            done = subprocess.run(["bash", "-c", filled(curl, ckpt, tmp_path, port)], check=False, capture_output=True, text=True, timeout=120)
            events = [line[6:] for line in done.stdout.splitlines() if line.startswith("data: ")]
            assert events[-1] == "[DONE]", done.stdout[-2000:] + done.stderr[-2000:]
            chunks = [json.loads(e) for e in events[:-1]]
            assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=30)
