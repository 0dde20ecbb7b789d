"""The generation worker of task=serve: queued, not batched.

Requests wait in a FIFO queue; up to `max_active` of them are decoded at once, interleaved one
token each in turn (round robin), each with its own KV cache at batch size 1. So a new chat gets
its first token after at most one step of every active reply instead of after whole replies, and
N active replies each run about N times slower. Rows of different prompts are not batched into
one forward pass (the KV cache keeps one position for all its rows). One thread owns the net; the
HTTP side only puts jobs in and reads their events. A tool call runs in a thread pool (its stream
yields WAITING until the call's future is done), so the other replies keep streaming meanwhile.
"""

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from lightning_modules.gpt.tools import WAITING

Piece = tuple[str, str]  # (kind: "text" | "python" | "output", text)
ReplyStream = Generator[Piece, None, str]  # yields one piece per sampled token; returns the finish reason


@dataclass
class Sampling:
    max_new_tokens: int
    temperature: float
    top_k: int | None
    seed: int | None = None
    top_p: float = 1.0


class QueueFull(Exception):
    pass


class Job:
    """One request: its prompt, its events (an asyncio queue read by the HTTP handler)."""

    def __init__(self, prompt: list[int], sampling: Sampling, timeout_s: float, loop: asyncio.AbstractEventLoop):
        self.prompt, self.sampling = prompt, sampling
        self.loop, self.events = loop, asyncio.Queue()
        self.cancelled = threading.Event()
        self.submitted = time.monotonic()
        self.deadline = self.submitted + timeout_s
        self.completion_tokens = 0
        self.waiting = False  # a tool call of this reply is running
        self.stream: ReplyStream | None = None

    def emit(self, event: dict) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def finish(self, reason: str, message: str | None = None) -> None:
        usage = {"prompt_tokens": len(self.prompt), "completion_tokens": self.completion_tokens,
                 "total_tokens": len(self.prompt) + self.completion_tokens}
        self.emit({"type": "done", "finish_reason": reason, "usage": usage, **({"message": message} if message else {})})
        if self.stream is not None:
            self.stream.close()


class GenerationWorker:
    def __init__(self, make_stream: Callable[[list[int], Sampling], ReplyStream], max_active: int = 8, max_queue: int = 64):
        self.make_stream, self.max_active, self.max_queue = make_stream, max_active, max_queue
        self.pending: collections.deque[Job] = collections.deque()
        self.active: list[Job] = []
        self.wake = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="gpt-generation", daemon=True)

    def start(self) -> "GenerationWorker":
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=10)

    @property
    def load(self) -> dict:
        return {"active": len(self.active), "queued": len(self.pending)}

    def submit(self, job: Job) -> None:
        with self.wake:
            if len(self.pending) >= self.max_queue:
                raise QueueFull(f"{len(self.pending)} requests are waiting (serve.max_queue)")
            self.pending.append(job)
            self.wake.notify()

    def _admit(self) -> bool:
        with self.wake:
            while not self.stopping and not self.active and not self.pending:
                self.wake.wait()
            while self.pending and len(self.active) < self.max_active:
                self.active.append(self.pending.popleft())
            return not self.stopping

    def _step(self, job: Job) -> bool:
        """One token of `job`; False when it is over."""
        if job.cancelled.is_set():
            job.finish("cancelled")
            return False
        if time.monotonic() > job.deadline:
            job.finish("timeout", "the request ran past serve.request_timeout_s")
            return False
        try:
            if job.stream is None:
                job.stream = self.make_stream(job.prompt, job.sampling)
            kind, text = next(job.stream)
            job.waiting = kind == WAITING
            if job.waiting:
                return True
        except StopIteration as stop:
            job.finish(stop.value or "stop")
            return False
        except Exception as err:  # a failed reply must not take the worker down
            job.emit({"type": "error", "message": f"{type(err).__name__}: {err}"})
            job.finish("error")
            return False
        job.completion_tokens += 1
        if text:
            job.emit({"type": "token", "kind": kind, "text": text})
        return True

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while self._admit():
            for job in list(self.active):
                if not self._step(job):
                    self.active.remove(job)
            if self.active and all(job.waiting for job in self.active):
                with self.wake:  # every reply waits for a tool: sleep until one is done or a job comes
                    self.wake.wait(0.005)
        for job in [*self.active, *self.pending]:
            job.finish("cancelled", "the server is shutting down")
