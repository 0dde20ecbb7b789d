"""What a request may say, checked before anything runs: the body (JSON object, bounded nesting,
finite numbers), the messages (OpenAI's roles and text parts), the sampling fields with their
ranges, the features we do not have (refused, never ignored), and the prompt that fits the context
(oldest exchanges dropped, in one linear pass). Every refusal is an `ApiError` naming the field."""

import json
import math
import re
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from datamodules.gpt.tokenizer import ASSISTANT_END, ASSISTANT_START, USER_END, USER_START
from lightning_modules.gpt.serve.settings import ServeSettings
from lightning_modules.gpt.serve.worker import Sampling

SEED_LIMIT = 2**63  # torch.Generator.manual_seed takes a signed 64-bit seed
MAX_STOPS = 4  # as OpenAI
# Fields of /v1/chat/completions we read, and those we accept as long as they ask for nothing we lack.
READ = {"messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "top_k", "seed", "n", "stop"}
HARMLESS = {"user", "store", "metadata", "service_tier", "parallel_tool_calls", "prompt_cache_key", "safety_identifier"}
# field -> (what it asks for is fine when, why not)
UNSUPPORTED = {
    "tools": (lambda v: not v, "tool definitions: this model only calls its own Python tool"),
    "tool_choice": (lambda v: v in (None, "none", "auto"), "tool_choice: no tools can be defined"),
    "functions": (lambda v: not v, "functions: no tools can be defined"),
    "function_call": (lambda v: v in (None, "none", "auto"), "function_call: no tools can be defined"),
    "logprobs": (lambda v: not v, "logprobs are not returned by this server"),
    "top_logprobs": (lambda v: v is None, "logprobs are not returned by this server"),
    "response_format": (lambda v: v is None or (isinstance(v, dict) and v.get("type") == "text"), "response_format: only {\"type\": \"text\"}"),
    "logit_bias": (lambda v: not v, "logit_bias is not supported"),
    "frequency_penalty": (lambda v: v in (None, 0), "frequency_penalty is not supported (send 0 or leave it out)"),
    "presence_penalty": (lambda v: v in (None, 0), "presence_penalty is not supported (send 0 or leave it out)"),
    "modalities": (lambda v: v in (None, ["text"]), "modalities: only [\"text\"]"),
    "audio": (lambda v: v is None, "audio output is not supported"),
    "prediction": (lambda v: v is None, "predicted outputs are not supported"),
    "reasoning_effort": (lambda v: v is None, "reasoning_effort: this is not a reasoning model"),
    "web_search_options": (lambda v: v is None, "web search is not supported"),
}
STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def error_response(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def nesting_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (strings skipped), in one linear pass."""
    depth = deepest = 0
    for byte in STRINGS.sub(b'""', body):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def parse_body(body: bytes, settings: ServeSettings) -> dict:
    if nesting_depth(body) > settings.max_json_depth:
        raise ApiError(400, f"the body nests deeper than {settings.max_json_depth} levels (serve.max_json_depth)", "invalid_json")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # ValueError: also a 5000-digit integer
        raise ApiError(400, f"the body is not valid JSON: {err}", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object", "invalid_json")
    return data


def check_features(data: dict, openai: bool) -> None:
    """Refuse what we cannot do (with what to send instead) and fields we do not know."""
    for key, (fine, why) in UNSUPPORTED.items():
        if key in data and not fine(data[key]):
            raise ApiError(400, f"'{key}' is not supported: {why}", "unsupported_parameter", key)
    known = READ | HARMLESS | set(UNSUPPORTED) if openai else {"messages", "max_tokens", "temperature", "top_k", "top_p", "seed"}
    for key in data:
        if key not in known:
            raise ApiError(400, f"unrecognized request argument '{key}'", "unknown_parameter", key)


def text_of(content, where: str) -> str:
    """A message's content: a string, or a list of text parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in ("image_url", "input_audio", "file", "input_image"):
                raise ApiError(400, f"{where}.content[{j}] is a {kind} part: this model reads text only", "unsupported_content", f"{where}.content")
            else:
                raise ApiError(400, f"{where}.content[{j}] must be {{\"type\": \"text\", \"text\": \"...\"}}", "invalid_messages", f"{where}.content")
        return "".join(texts)
    raise ApiError(400, f"{where} must have a string 'content' or a list of text parts", "invalid_messages", where)


def conversation_of(data: dict, settings: ServeSettings) -> list[dict]:
    """user/assistant turns, alternating, ending with the user's; system and developer messages
    go before the first user message (the model has no system role)."""
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content}", "invalid_messages", "messages")
    if len(messages) > settings.max_messages:
        raise ApiError(400, f"'messages' holds {len(messages)} messages; the limit is {settings.max_messages} (serve.max_messages)", "too_many_messages", "messages")
    system, turns = [], []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'", "invalid_messages", where)
        role = message.get("role")
        if role == "tool" or message.get("tool_calls") or message.get("function_call"):
            raise ApiError(400, f"{where}: tool messages and tool_calls are not supported (no tools can be defined)", "unsupported_parameter", where)
        content = text_of(message.get("content"), where)
        if len(content) > settings.max_message_chars:
            raise ApiError(413, f"{where} has {len(content)} characters; the limit is {settings.max_message_chars}", "message_too_long", where)
        if role in ("system", "developer"):
            system.append(content)
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": content})
        else:
            raise ApiError(400, f"{where}.role={role!r}; use user, assistant, system or developer", "invalid_messages", f"{where}.role")
    if system and turns and turns[0]["role"] == "user":
        turns[0] = {"role": "user", "content": "\n\n".join([*system, turns[0]["content"]])}
    for i, turn in enumerate(turns):
        if turn["role"] != ("user" if i % 2 == 0 else "assistant"):
            raise ApiError(400, "messages must alternate user, assistant, ..., and end with a user message", "invalid_messages", "messages")
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "the last message must be the user's", "invalid_messages", "messages")
    return turns


def number(data: dict, key: str, kind: type, low: float, high: float, default=None, high_open: bool = False):
    """data[key] as a finite `kind` in [low, high] (or [low, high)), or `default` when absent or null."""
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{key}' must be a number; got {json.dumps(value)[:40]}", "invalid_parameter", key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"'{key}' must be a finite number; got {value}", "invalid_parameter", key)
    if kind is int and value != int(value):
        raise ApiError(400, f"'{key}' must be an integer; got {value}", "invalid_parameter", key)
    if value < low or value > high or (high_open and value == high):
        bound = f"below {high}" if high_open else f"at most {high}"
        raise ApiError(400, f"'{key}' must be at least {low} and {bound}; got {value}", "invalid_parameter", key)
    return kind(value)


@dataclass
class Request:
    turns: list[dict]
    sampling: Sampling  # max_new_tokens: None until the prompt is known
    max_tokens: int | None  # what the client asked for; None: the room the context leaves
    n: int = 1
    stop: tuple[str, ...] = ()


def request_of(data: dict, settings: ServeSettings, openai: bool) -> Request:
    check_features(data, openai)
    turns = conversation_of(data, settings)
    key = "max_completion_tokens" if data.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = number(data, key, int, 1, SEED_LIMIT, high_open=True)
    if max_tokens is not None and settings.max_new_tokens and max_tokens > settings.max_new_tokens:
        raise ApiError(400, f"{key}={max_tokens} is over this server's limit of {settings.max_new_tokens} (serve.max_new_tokens)", "max_tokens_too_large", key)
    sampling = Sampling(
        max_new_tokens=None, temperature=number(data, "temperature", float, 0, 2, settings.temperature),
        top_k=number(data, "top_k", int, 1, SEED_LIMIT, settings.top_k, high_open=True),
        seed=number(data, "seed", int, -SEED_LIMIT, SEED_LIMIT, high_open=True), top_p=number(data, "top_p", float, 0, 1, 1.0),
    )
    if sampling.top_p == 0:
        sampling.temperature = 0.0  # only the most likely token is left
    n = number(data, "n", int, 1, settings.max_choices, 1)
    stop = data.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else () if stop is None else None
    if stops is None or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, f"'stop' must be a string or a list of at most {MAX_STOPS} non-empty strings", "invalid_parameter", "stop")
    if "stream_options" in data and data["stream_options"] is not None and not isinstance(data["stream_options"], dict):
        raise ApiError(400, "'stream_options' must be an object", "invalid_parameter", "stream_options")
    return Request(turns, sampling, max_tokens, n, stops)


def message_tokens(tokenizer, turn: dict) -> list[int]:
    """One turn as datamodules.gpt.chat.render_conversation renders it."""
    start, end = (USER_START, USER_END) if turn["role"] == "user" else (ASSISTANT_START, ASSISTANT_END)
    return [tokenizer.id_of(start), *tokenizer.encode(turn["content"]), tokenizer.id_of(end)]


def fit_prompt(tokenizer, turns: list[dict], context: int, max_tokens: int | None, cap: int | None) -> tuple[list[int], int]:
    """(prompt, reply budget). Each turn is encoded once; the oldest exchanges are dropped until
    the prompt leaves `max_tokens` (or, without it, a quarter of the context) for the reply."""
    pieces = [message_tokens(tokenizer, turn) for turn in turns]
    frame = 2  # <|bos|> ... <|assistant_start|>
    want = max_tokens or min(cap or context, max(1, context // 4))
    total = frame + sum(len(p) for p in pieces)
    first = 0
    while total + want > context and first + 2 < len(pieces):
        total -= len(pieces[first]) + len(pieces[first + 1])
        first += 2
    room = context - total
    if room < 1:
        raise ApiError(400, f"the last message is {total} tokens; the context is {context} tokens", "context_length_exceeded", "messages")
    if max_tokens is not None and max_tokens > room:
        raise ApiError(400, f"this model's context is {context} tokens; the messages take {total} and max_tokens={max_tokens} "
                            f"asks for more than the {room} left: lower max_tokens or shorten the messages", "context_length_exceeded", "messages")
    prompt = [tokenizer.bos_id] + [t for p in pieces[first:] for t in p] + [tokenizer.id_of(ASSISTANT_START)]
    return prompt, min(max_tokens or room, cap or room, room)


class StopScanner:
    """Cuts a streamed text at the first of the stop strings; holds back a tail that may be the
    start of one, so nothing after a stop is ever sent."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops, self.held, self.stopped = stops, "", False
        self.hold = max((len(s) for s in stops), default=1) - 1

    def push(self, text: str) -> str:
        if self.stopped or not self.stops:
            return "" if self.stopped else text
        self.held += text
        cuts = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if cuts:
            self.stopped = True
            out, self.held = self.held[: min(cuts)], ""
            return out
        keep = len(self.held) - self.hold
        out, self.held = (self.held[:keep], self.held[keep:]) if keep > 0 else ("", self.held)
        return out

    def flush(self) -> str:
        out, self.held = ("" if self.stopped else self.held), ""
        return out
