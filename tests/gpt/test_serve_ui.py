"""The chat page in a real headless Chromium: it loads, shows the model, sends a message as a person
types it (the page sends no max_tokens, the server runs with its defaults), receives the reply as
a stream of tokens (more than one server-sent event reaches the page), and stops.

GPT_SERVE_SCREENSHOT=<png> GPT_SERVE_CKPT=<checkpoint> saves the screenshot of a chat with that
checkpoint (docs/gpt_serve.png is made so); otherwise a tiny random model chats into a temp file."""

import os
import time

import pytest

from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.task import build_server
from tests.gpt.browser import Chromium, chromium_path
from tests.gpt.serving import running, tiny_model

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium (apt-get install -y chromium)")
MESSAGE = os.environ.get("GPT_SERVE_MESSAGE", "What is 12 plus 30?")


def served():
    checkpoint = os.environ.get("GPT_SERVE_CKPT")
    if checkpoint:
        from lightning_modules.gpt.checkpoint import build_net, read_gpt_checkpoint
        from lightning_modules.gpt.serve.task import model_identity

        gpt = read_gpt_checkpoint(checkpoint)
        return build_net(gpt).eval(), gpt.tokenizer, model_identity(checkpoint, None)[0]
    net, tokenizer = tiny_model()
    return net, tokenizer, "tiny-test"


def test_chat_page_streams_a_reply_in_chromium(tmp_path):
    net, tokenizer, name = served()
    app, worker = build_server(net, tokenizer, name, ServeSettings(temperature=0.0))  # greedy: the same reply each time
    browser = None
    with running(app, worker) as port:
        try:
            browser = Chromium()
            browser.open(f"http://127.0.0.1:{port}/")
            assert name in browser.wait_for("document.getElementById('model').textContent.includes('parameters') && document.getElementById('model').textContent")
            browser.evaluate(f"document.getElementById('input').value = {MESSAGE!r}; document.getElementById('send').click()")
            browser.wait_for("window.chatStats.replies === 1", timeout=60)
            stats = browser.evaluate("window.chatStats")
            reply = browser.evaluate("document.querySelector('.msg.assistant').textContent")
            assert stats["tokenEvents"] > 1 and stats["lastFinish"] in ("stop", "length")
            assert browser.evaluate("document.querySelector('.msg.assistant .error') === null")
            assert browser.evaluate("document.querySelector('.msg.user').textContent") == MESSAGE
            assert "tokens" in reply and "first token" in reply
            time.sleep(0.1)
            target = os.environ.get("GPT_SERVE_SCREENSHOT") or str(tmp_path / "chat.png")
            browser.screenshot(target)
            assert os.path.getsize(target) > 1000
            browser.evaluate("document.getElementById('new-chat').click()")
            assert browser.evaluate("document.querySelectorAll('.msg').length") == 0
        finally:
            if browser is not None:
                browser.close()
