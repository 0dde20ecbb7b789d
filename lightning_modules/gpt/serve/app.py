"""The HTTP side of task=serve (FastAPI).

    GET  /                      the chat page (static/index.html)
    GET  /health                {"status": "ok", "model": ..., "active": n, "queued": n}
    GET  /api/info              model name, parameters, context, limits, whether tools run
    POST /api/chat              {"messages": [...], "temperature", "top_k", "top_p", "max_tokens", "seed"} ->
                                server-sent events: token {kind, text} ..., then done {finish_reason, usage}
    GET  /v1/models, /v1/models/{id}
    POST /v1/chat/completions   OpenAI's dialect, "stream": true (SSE chunks, then [DONE]) or false

Errors are OpenAI's shape `{"error": {"message", "type", "param", "code"}}` (guard.py and
protocol.py say which). Without `max_tokens` a reply may use what the context leaves.
"""

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lightning_modules.gpt.serve.guard import AccessLog, make_guard
from lightning_modules.gpt.serve.protocol import ApiError, StopScanner, error_response, fit_prompt, parse_body, request_of
from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.worker import GenerationWorker, Job, QueueFull

STATIC = Path(__file__).resolve().parent / "static"
TOOL_FENCES = {"python": ("\n```python\n", "\n```\n"), "output": ("```output\n", "\n```\n")}
DISCONNECT_POLL_S = 0.25


@dataclass
class ServedModel:
    name: str
    parameters: int
    max_positions: int
    tokenizer: object
    tools: bool  # tool calls are run
    created: int = 0  # when the checkpoint was written (Unix seconds)


def sse(data) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def fenced(event: dict) -> str:
    opening, closing = TOOL_FENCES.get(event["kind"], ("", ""))
    return f"{opening}{event['text']}{closing}" if opening else event["text"]


def create_app(model: ServedModel, worker: GenerationWorker, settings: ServeSettings, token: str | None = None) -> FastAPI:
    app = FastAPI(title="hylab GPT", docs_url=None, redoc_url=None, openapi_url=None, dependencies=[Depends(make_guard(settings, token))])
    if settings.access_log:
        app.add_middleware(AccessLog)
    context = min(settings.max_context or model.max_positions, model.max_positions)
    card = {"id": model.name, "object": "model", "created": model.created, "owned_by": "hylab"}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err.status, err.message, err.code, err.param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = f"{request.method} {request.url.path}: {err.detail}"
        return error_response(err.status_code, message, codes.get(err.status_code, "http_error"))

    async def read_body(request: Request) -> dict:
        body = bytearray()
        async for chunk in request.stream():  # a chunked body has no content-length
            body += chunk
            if len(body) > settings.max_body_bytes:
                raise ApiError(413, f"the request body is over the limit of {settings.max_body_bytes} bytes", "body_too_large")
        return parse_body(bytes(body), settings)

    async def start(data: dict, openai: bool) -> tuple[list[Job], object]:
        if openai and data.get("model") not in (None, model.name):
            raise ApiError(404, f"the model {data['model']!r} does not exist; this server has {model.name!r}", "model_not_found", "model")
        asked = request_of(data, settings, openai)
        # tokenizing a long conversation takes a while: not on the event loop that serves everyone
        prompt, budget = await asyncio.to_thread(fit_prompt, model.tokenizer, asked.turns, context, asked.max_tokens, settings.max_new_tokens)
        loop, jobs = asyncio.get_running_loop(), []
        for i in range(asked.n):
            seed = None if asked.sampling.seed is None else asked.sampling.seed + i
            jobs.append(Job(prompt, replace(asked.sampling, max_new_tokens=budget, seed=seed), settings.request_timeout_s, loop))
        try:
            for job in jobs:
                worker.submit(job)
        except QueueFull as err:
            for job in jobs:
                job.cancelled.set()
            raise ApiError(503, f"the server is busy: {err}; try again later", "busy") from None
        return jobs, asked

    async def events_of(job: Job):
        """The job's events; cancels it when the consumer stops (client gone, stop string met)."""
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
        (job,), _ = await start(await read_body(request), openai=False)

        async def stream():
            async for event in events_of(job):
                yield sse(event)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{name}")
    async def retrieve(name: str):
        if name != model.name:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {model.name!r}", "model_not_found")
        return card

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        data = await read_body(request)
        jobs, asked = await start(data, openai=True)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": model.name}
        merged: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, job: Job):
            scanner = StopScanner(asked.stop)
            async for event in events_of(job):
                if event["type"] == "token":
                    text = scanner.push(fenced(event))
                    if text:
                        await merged.put((i, {"type": "token", "text": text}))
                    if scanner.stopped:
                        await merged.put((i, {"type": "done", "finish_reason": "stop", "completion_tokens": job.completion_tokens}))
                        return
                elif event["type"] == "done":
                    rest = scanner.flush()
                    if rest:
                        await merged.put((i, {"type": "token", "text": rest}))
                    await merged.put((i, {"type": "done", "finish_reason": event["finish_reason"], "completion_tokens": event["usage"]["completion_tokens"]}))

        pumps = [asyncio.create_task(pump(i, job)) for i, job in enumerate(jobs)]

        def stop_all():
            for task in pumps:
                task.cancel()
            for job in jobs:
                job.cancelled.set()

        async def merged_events():
            """(choice, event) of every choice until all are done; the jobs end with the consumer."""
            try:
                left = len(jobs)
                while left:
                    i, event = await merged.get()
                    left -= event["type"] == "done"
                    yield i, event
            finally:
                stop_all()

        def usage(completion: int) -> dict:
            prompt = len(jobs[0].prompt)
            return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

        if data.get("stream"):
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))

            def chunk(choices: list, **extra) -> str:
                return sse({**head, "object": "chat.completion.chunk", "choices": choices, **extra})

            async def chunks():
                for i in range(len(jobs)):
                    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
                completion = 0
                async for i, event in merged_events():
                    if event["type"] == "token":
                        yield chunk([{"index": i, "delta": {"content": event["text"]}, "finish_reason": None}])
                    else:
                        completion += event["completion_tokens"]
                        yield chunk([{"index": i, "delta": {}, "finish_reason": event["finish_reason"]}])
                if include_usage:
                    yield chunk([], usage=usage(completion))
                yield sse("[DONE]")

            return StreamingResponse(chunks(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        texts, finish, completion, left = [[] for _ in jobs], [None] * len(jobs), 0, len(jobs)
        try:
            while left:
                try:  # a client that leaves stops its replies: look for the disconnect between events
                    i, event = await asyncio.wait_for(merged.get(), DISCONNECT_POLL_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return error_response(499, "the client closed the request", "client_closed")
                    continue
                if event["type"] == "token":
                    texts[i].append(event["text"])
                else:
                    finish[i], completion, left = event["finish_reason"], completion + event["completion_tokens"], left - 1
        finally:
            stop_all()
        choices = [{"index": i, "message": {"role": "assistant", "content": "".join(text)}, "finish_reason": finish[i]}
                   for i, text in enumerate(texts)]
        return {**head, "object": "chat.completion", "choices": choices, "usage": usage(completion)}

    return app
