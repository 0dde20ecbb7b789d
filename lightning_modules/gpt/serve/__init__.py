"""task=serve: a GPT checkpoint behind HTTP, with a chat page.

    app.py        the FastAPI app: the page, /api/chat (server-sent events), /v1/chat/completions
                  (OpenAI style, streamed or not), /health, /v1/models; limits, errors, access token
    worker.py     the generation worker: a FIFO queue, active replies interleaved token by token
    task.py       task=serve (reads the checkpoint and the `serve` settings, runs uvicorn)
    settings.py   ServeSettings (torch-free)
    static/       index.html, the single-page chat UI
"""
