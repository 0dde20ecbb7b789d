"""The HTTP side of task=serve (FastAPI).

    GET  /                      the chat page (static/index.html)
    GET  /health                {"status": "ok", "model": ..., "active": n, "queued": n}
    GET  /api/info              model name, parameters, context, limits, whether tools run
    POST /api/chat              {"messages": [...], "temperature", "top_k", "max_tokens"} ->
                                server-sent events: token {kind, text} ..., then done {finish_reason, usage}
    GET  /v1/models             OpenAI style
    POST /v1/chat/completions   OpenAI style, "stream": true (SSE chunks, then [DONE]) or false

Errors are JSON `{"error": {"message", "type", "code"}}`: malformed JSON or a bad field 400, a
body or message over the limits 413, a conversation that cannot fit the context 413, a missing or
wrong token 401, a full queue 503. When the server has a token, every route but /health needs
`Authorization: Bearer <token>` (the page takes it once from its URL, `/?token=...`).
"""

import asyncio
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from datamodules.gpt.chat import render_for_reply
from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.worker import GenerationWorker, Job, QueueFull, Sampling

STATIC = Path(__file__).resolve().parent / "static"
TOOL_FENCES = {"python": ("\n```python\n", "\n```\n"), "output": ("```output\n", "\n```\n")}


@dataclass
class ServedModel:
    name: str
    parameters: int
    max_positions: int
    tokenizer: object
    tools: bool  # tool calls are run


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def error_response(status: int, message: str, code: str) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}}, status_code=status)


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def create_app(model: ServedModel, worker: GenerationWorker, settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="hylab GPT", docs_url=None, redoc_url=None, openapi_url=None)
    context = min(settings.max_context or model.max_positions, model.max_positions)

    @app.middleware("http")
    async def limits_and_token(request: Request, call_next):
        if settings.token and request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if request.url.path == "/":
                given = given or request.query_params.get("token", "")
            if not secrets.compare_digest(given.encode(), settings.token.encode()):
                return error_response(401, "missing or wrong access token: send 'Authorization: Bearer <token>'", "unauthorized")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_body_bytes:
            return error_response(413, f"the request body has {length} bytes; the limit is {settings.max_body_bytes}", "body_too_large")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.message, err.code)

    async def read_json(request: Request) -> dict:
        body = b""
        async for chunk in request.stream():  # a chunked body has no content-length
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise ApiError(413, f"the request body is over the limit of {settings.max_body_bytes} bytes", "body_too_large")
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ApiError(400, f"the body is not valid JSON: {err}", "invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_json")
        return data

    def conversation_of(data: dict) -> list[dict]:
        """user/assistant messages, alternating, ending with the user; system messages are put
        before the first user message (the model has no system role)."""
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list of {role, content}", "invalid_messages")
        system, turns = [], []
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise ApiError(400, f"messages[{i}] must be an object with a string 'content'", "invalid_messages")
            if len(message["content"]) > settings.max_message_chars:
                raise ApiError(413, f"messages[{i}] has {len(message['content'])} characters; the limit is {settings.max_message_chars}", "message_too_long")
            role = message.get("role")
            if role == "system":
                system.append(message["content"])
            elif role in ("user", "assistant"):
                turns.append({"role": role, "content": message["content"]})
            else:
                raise ApiError(400, f"messages[{i}].role={role!r}; use user, assistant or system", "invalid_messages")
        if system and turns and turns[0]["role"] == "user":
            turns[0] = {"role": "user", "content": "\n\n".join([*system, turns[0]["content"]])}
        for i, turn in enumerate(turns):
            if turn["role"] != ("user" if i % 2 == 0 else "assistant"):
                raise ApiError(400, "messages must alternate user, assistant, ..., and end with a user message", "invalid_messages")
        if not turns or turns[-1]["role"] != "user":
            raise ApiError(400, "the last message must be the user's", "invalid_messages")
        return turns

    def sampling_of(data: dict) -> Sampling:
        def number(key, default, kind, low):
            value = data.get(key, default)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)) or value < low:
                raise ApiError(400, f"'{key}' must be a {kind.__name__} >= {low}; got {value!r}", "invalid_parameter")
            return kind(value)

        max_tokens = number("max_tokens", settings.max_new_tokens, int, 1)
        if max_tokens > settings.max_new_tokens:
            raise ApiError(400, f"max_tokens={max_tokens} is over this server's limit of {settings.max_new_tokens}", "max_tokens_too_large")
        top_k = number("top_k", settings.top_k, int, 1)
        return Sampling(max_tokens, number("temperature", settings.temperature, float, 0), top_k, number("seed", None, int, 0))

    def prompt_of(turns: list[dict], sampling: Sampling) -> list[int]:
        """The rendered conversation; the oldest exchanges are dropped until it fits the context."""
        room = context - sampling.max_new_tokens
        while True:
            prompt = render_for_reply(model.tokenizer, turns)
            if len(prompt) <= room:
                return prompt
            if len(turns) == 1:
                raise ApiError(413, f"the message is {len(prompt)} tokens; with max_tokens={sampling.max_new_tokens} "
                                    f"the context of {context} tokens leaves room for {room}", "context_length_exceeded")
            turns = turns[2:]

    def start(data: dict, request: Request) -> Job:
        sampling = sampling_of(data)
        job = Job(prompt_of(conversation_of(data), sampling), sampling, settings.request_timeout_s, asyncio.get_running_loop())
        try:
            worker.submit(job)
        except QueueFull as err:
            raise ApiError(503, f"the server is busy: {err}; try again later", "busy") from None
        return job

    async def events_of(job: Job):
        """The job's events; cancels it when the client goes away (stop button, closed tab)."""
        try:
            while True:
                event = await job.events.get()
                yield event
                if event["type"] == "done":
                    return
        finally:
            job.cancelled.set()

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model.name, **worker.load}

    @app.get("/api/info")
    async def info():
        return {
            "model": model.name, "parameters": model.parameters, "context": context, "tools": model.tools,
            "limits": {"max_message_chars": settings.max_message_chars, "max_new_tokens": settings.max_new_tokens,
                       "max_body_bytes": settings.max_body_bytes, "request_timeout_s": settings.request_timeout_s},
            "defaults": {"temperature": settings.temperature, "top_k": settings.top_k},
        }

    @app.post("/api/chat")
    async def chat(request: Request):
        job = start(await read_json(request), request)

        async def stream():
            async for event in events_of(job):
                yield sse(event)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model.name, "object": "model", "owned_by": "hylab"}]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        data = await read_json(request)
        job = start(data, request)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": ident, "created": created, "model": model.name}

        def content(event: dict) -> str:
            opening, closing = TOOL_FENCES.get(event["kind"], ("", ""))
            return f"{opening}{event['text']}{closing}" if opening else event["text"]

        if data.get("stream"):
            async def chunks():
                yield sse({**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
                async for event in events_of(job):
                    if event["type"] == "token":
                        delta = {"content": content(event)}
                        yield sse({**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                    elif event["type"] == "done":
                        yield sse({**head, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": event["finish_reason"]}], "usage": event["usage"]})
                yield sse("[DONE]")

            return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        text, done = [], {}
        async for event in events_of(job):
            if event["type"] == "token":
                text.append(content(event))
            elif event["type"] == "done":
                done = event
        message = {"role": "assistant", "content": "".join(text)}
        return {**head, "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": done.get("finish_reason")}], "usage": done.get("usage")}

    return app
