"""Settings of task=serve (torch-free): conf/serve/gpt.yaml holds the values."""

from dataclasses import dataclass, field

from hylab.settings import non_negative, positive

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"  # another address needs a token
    port: int = field(default=8000, metadata=non_negative())  # 0: any free port
    token: str | None = None  # required when host is not a loopback address (or HYLAB_SERVE_TOKEN)
    model_name: str | None = None  # shown in the page and /v1/models; None: the checkpoint's run name
    max_message_chars: int = field(default=4000, metadata=positive())  # one message; longer: 413
    max_body_bytes: int = field(default=65536, metadata=positive())  # one request body; larger: 413
    max_new_tokens: int = field(default=256, metadata=positive())  # cap of a request's max_tokens
    max_context: int | None = field(default=None, metadata=positive())  # prompt + reply; None: the model's positions
    request_timeout_s: float = field(default=60.0, metadata=positive())  # queue wait + generation
    max_active: int = field(default=8, metadata=positive())  # replies interleaved at once
    max_queue: int = field(default=64, metadata=positive())  # waiting beyond that: 503
    temperature: float = field(default=0.6, metadata=non_negative())  # defaults of a request
    top_k: int | None = field(default=50, metadata=positive())
    tools: bool = True  # run the model's Python tool calls (when its tokenizer has the tool tokens)
    tool_wall_s: float = field(default=3.0, metadata=positive())
    tool_memory_mb: int = field(default=256, metadata=positive())
