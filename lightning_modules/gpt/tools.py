"""Tool use while sampling: the model writes `<|python_start|>code<|python_end|>`, the engine runs
the code in the sandbox and feeds `<|output_start|>output<|output_end|>` back before the model
goes on (nanochat's engine does the same with its calculator).

Each row of a batch is a small state machine:

    text --python_start--> code --python_end--> (run the code) forced output tokens --> text
    text --any chat token (assistant_end, bos, ...)--> done

All rows advance in lockstep, one position per step, so one KV cache serves the batch: a row that
has forced tokens queued takes the next of them instead of its sampled token. The output tokens
are never sampled (their logits are masked), only injected. A version-1 tokenizer has no tool
tokens: then nothing is ever forced and this is plain sampling that stops at the chat tokens.
"""

import ast
import collections
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from datamodules.gpt.tokenizer import (
    ASSISTANT_END,
    OUTPUT_END,
    OUTPUT_START,
    PYTHON_END,
    PYTHON_START,
    SPECIAL_TOKENS,
    GPTTokenizer,
)
from lightning_modules.gpt.engine import KVCache, StreamingDecoder, sample_next

TEXT, PYTHON, OUTPUT, MARK = "text", "python", "output", "mark"  # kinds of generated tokens
WAITING = "waiting"  # reply_pieces: no token this time, a tool call is running


def run_in_sandbox(code: str, wall_s: float = 3.0, memory_mb: int = 256, max_chars: int = 400) -> str:
    """The tool: run `code` in the sandbox; its stdout, or its error line when it failed (also
    `the python tool is unavailable: <why>` where no sandbox can be set up: the code never runs
    then). When the code prints nothing, the value of its last expression is shown (a calculator-style call)."""
    from lightning_modules.gpt.sandbox import run_python

    result = run_python(with_last_expression_printed(code), cpu_s=max(1.0, wall_s / 2), memory_mb=memory_mb,
                        wall_s=wall_s, max_output_bytes=4 * max_chars)
    return result.text(max_chars).strip()


def with_last_expression_printed(code: str) -> str:
    """`12 * 7` -> `print(12 * 7)`; code whose last statement is not an expression is unchanged."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not (isinstance(last.value, ast.Call) and getattr(last.value.func, "id", None) == "print"):
        tree.body[-1] = ast.Expr(ast.Call(ast.Name("print", ast.Load()), [last.value], []))
        return ast.unparse(ast.fix_missing_locations(tree))
    return code


@dataclass
class ToolTokens:
    python_start: int
    python_end: int
    output_start: int
    output_end: int

    @classmethod
    def of(cls, tokenizer: GPTTokenizer) -> "ToolTokens | None":
        if not tokenizer.has_tools:
            return None
        return cls(*(tokenizer.id_of(t) for t in (PYTHON_START, PYTHON_END, OUTPUT_START, OUTPUT_END)))


@dataclass
class Row:
    """One sample's state: its tokens so far, which of them were forced, the code being written."""

    tokens: list[int] = field(default_factory=list)
    forced_mask: list[bool] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    code: list[int] | None = None  # while inside a tool call
    queue: collections.deque = field(default_factory=collections.deque)  # forced tokens to come
    done: bool = False
    tool_calls: int = 0


@dataclass
class Step:
    row: int
    token: int
    kind: str  # TEXT, PYTHON (code), OUTPUT (injected tool output), MARK (a tool token)
    forced: bool


def stop_ids_of(tokenizer: GPTTokenizer) -> set[int]:
    """Any chat token ends the reply (the model would begin another turn)."""
    return {tokenizer.id_of(t) for t in SPECIAL_TOKENS}


@torch.inference_mode()
def generate_with_tools(
    net,
    tokenizer: GPTTokenizer,
    prompt: Sequence[int],
    max_new_tokens: int,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int | None = None,
    run_tool: Callable[[str], str] | None = run_in_sandbox,
    top_p: float = 1.0,
    max_output_tokens: int = 64,
    max_tool_calls: int = 4,
) -> Iterator[list[Step]]:
    """Yield, per position, the Steps of the rows still going; `rows` of the returned generator's
    final value (StopIteration.value) holds every row. A stop token ends a row (it is in its tokens).

    `run_tool` returns the output, or a `concurrent.futures.Future` of it: then, while the call
    runs, the generator yields empty lists, so one thread can step other replies in between."""
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    total = len(prompt) + max_new_tokens
    if total > net.config.context_len:
        raise ValueError(f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's {net.config.context_len} positions")
    tools = ToolTokens.of(tokenizer) if run_tool is not None else None
    stops = stop_ids_of(tokenizer)
    device = net.wte.weight.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    banned = [i for i in ([tools.output_start, tools.output_end] if tools else []) if i is not None]
    if not tools and tokenizer.has_tools:  # tools off: a call would go nowhere, so none is started
        banned = [tokenizer.id_of(t) for t in (PYTHON_START, PYTHON_END, OUTPUT_START, OUTPUT_END)]

    def pick(logits: torch.Tensor) -> torch.Tensor:
        logits = logits[:, : tokenizer.vocab_size].clone()
        if banned:
            logits[:, banned] = float("-inf")
        return sample_next(logits, temperature, top_k, generator, top_p)

    prefill = KVCache(net, 1, total, net.wte.weight.dtype, device)
    logits = net(torch.tensor([list(prompt)], device=device), kv_cache=prefill)[:, -1].expand(num_samples, -1)
    cache = prefill.repeat_rows(num_samples)
    rows = [Row() for _ in range(num_samples)]
    pad = tokenizer.id_of(ASSISTANT_END)
    for _ in range(max_new_tokens):
        sampled = pick(logits).tolist()
        column, steps = [], []
        for i, row in enumerate(rows):
            if row.done:
                column.append(pad)
                continue
            forced = bool(row.queue)
            token = row.queue.popleft() if forced else sampled[i]
            kind = advance(row, token, tools, stops, forced)
            if kind == MARK and token == getattr(tools, "python_end", None) and not forced:
                output = run_tool(tokenizer.decode(row.code or [])) if row.tool_calls < max_tool_calls else "too many tool calls"
                while isinstance(output, Future) and not output.done():
                    yield []  # the tool runs elsewhere: the caller steps other work meanwhile
                output = output.result() if isinstance(output, Future) else output
                row.tool_calls += 1
                row.code = None
                row.queue.extend([tools.output_start, *tokenizer.encode(output)[:max_output_tokens], tools.output_end])
            row.tokens.append(token)
            row.forced_mask.append(forced)
            row.kinds.append(kind)
            steps.append(Step(i, token, kind, forced))
            column.append(token)
        if not steps:
            break
        yield steps
        if all(row.done for row in rows):
            break
        logits = net(torch.tensor(column, device=device)[:, None], kv_cache=cache)[:, -1]
    return rows


def advance(row: Row, token: int, tools: ToolTokens | None, stops: set[int], forced: bool) -> str:
    """Move the row's state machine by one token; return the token's kind."""
    if forced:
        return MARK if token in (tools.output_start, tools.output_end) else OUTPUT
    if tools and token == tools.python_start and row.code is None:
        row.code = []
        return MARK
    if tools and token == tools.python_end and row.code is not None:
        return MARK
    if token in stops:
        row.done = True
        return MARK
    if row.code is not None:
        row.code.append(token)
        return PYTHON
    return TEXT


def sample_with_tools(net, tokenizer, prompt, max_new_tokens, **kwargs) -> list[Row]:
    """Every row, run to its end."""
    stream = generate_with_tools(net, tokenizer, prompt, max_new_tokens, **kwargs)
    while True:
        try:
            next(stream)
        except StopIteration as end:
            return end.value


def reply_pieces(net, tokenizer, prompt: list[int], sampling, run_tool=run_in_sandbox, text_tokens: list | None = None):
    """One row as (kind, text) pieces, one per position (task=serve's worker and task=chat);
    returns the finish reason: "stop" at a stop token, "length" at max_new_tokens. The tokens of
    the assistant's own text are appended to `text_tokens` when given."""
    stream = generate_with_tools(
        net, tokenizer, prompt, sampling.max_new_tokens, temperature=sampling.temperature, top_k=sampling.top_k,
        seed=sampling.seed, run_tool=run_tool, top_p=sampling.top_p,
    )
    decoder, kind = None, None
    while True:
        try:
            steps = next(stream)
        except StopIteration as end:
            return "stop" if end.value and end.value[0].done else "length"
        if not steps:  # a tool call is still running
            yield WAITING, ""
            continue
        (step,) = steps
        if step.kind == MARK:  # a segment ends: its decoder starts afresh
            decoder = None
            yield TEXT, ""
            continue
        if decoder is None or step.kind != kind:
            decoder, kind = StreamingDecoder(tokenizer.decode), step.kind
        if text_tokens is not None and step.kind == TEXT:
            text_tokens.append(step.token)
        yield step.kind, decoder.push(step.token)


def text_of(tokenizer: GPTTokenizer, row: Row) -> str:
    """The text the assistant wrote (tool code and output left out): what a conversation keeps."""
    return tokenizer.decode([t for t, k in zip(row.tokens, row.kinds) if k == TEXT])


def stream_reply_with_tools(net, tokenizer, prompt: list[int], g, out) -> list[int]:
    """task=chat's reply, tool calls shown inline as `[python] code [output] result`; returns the
    tokens of the reply's text (code and output are not kept in the conversation)."""
    from lightning_modules.gpt.serve.worker import Sampling

    labels = {PYTHON: "[python] ", OUTPUT: "[output] ", TEXT: ""}
    shown, written, text_tokens = TEXT, False, []
    for kind, text in reply_pieces(net, tokenizer, prompt, Sampling(g.max_new_tokens, g.temperature, g.top_k, g.seed), text_tokens=text_tokens):
        if text and kind != shown:
            out.write((" " if written else "") + labels[kind])
            shown = kind
        written = written or bool(text)
        out.write(text)
        out.flush()
    return text_tokens
