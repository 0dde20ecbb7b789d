"""task=serve: a GPT checkpoint behind HTTP, with a chat page.

    app.py        the FastAPI app: the page, /api/chat (server-sent events), /v1/chat/completions
                  (OpenAI's dialect, streamed or not), /health, /v1/models
    protocol.py   what a request may say: body, messages, sampling fields, refused features, the
                  prompt that fits the context; OpenAI's error shape
    guard.py      Host, Origin, Content-Type, body size and token, before any route; the access log
    worker.py     the generation worker: a FIFO queue, active replies interleaved token by token
    task.py       task=serve (reads the checkpoint, the `serve` settings and the token, runs uvicorn)
    settings.py   ServeSettings (torch-free)
    client.py     a stdlib client and a server in a thread (tests, bench)
    static/       index.html, the single-page chat UI
"""
