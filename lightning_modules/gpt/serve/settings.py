"""Settings of task=serve (torch-free): the defaults live here; conf/serve/gpt.yaml says what an
experiment changes (`serve.port=8001` works on any GPT experiment: gpt_tiny brings the group)."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from hylab.errors import UserError
from hylab.settings import between, non_negative, parse_settings, positive

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_ENV = "HYLAB_SERVE_TOKEN"


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"  # another address needs a token
    port: int = field(default=8000, metadata=non_negative())  # 0: any free port
    # The access token is read from $HYLAB_SERVE_TOKEN or from this file (first line), never from a
    # setting: an override is recorded in the run folder and shown in the process list.
    token_file: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)  # Host names served besides the bound address
    model_name: str | None = None  # shown in the page and /v1/models; None: <experiment>-<short hash>
    max_message_chars: int = field(default=4000, metadata=positive())  # one message; longer: 413
    max_messages: int = field(default=256, metadata=positive())  # messages in one request; more: 400
    max_json_depth: int = field(default=16, metadata=positive())  # nesting of the request body; deeper: 400
    max_body_bytes: int = field(default=65536, metadata=positive())  # one request body; larger: 413
    max_new_tokens: int | None = field(default=None, metadata=positive())  # cap of a reply; None: what the context leaves
    max_context: int | None = field(default=None, metadata=positive())  # prompt + reply; None: the model's positions
    request_timeout_s: float = field(default=60.0, metadata=positive())  # queue wait + generation
    max_active: int = field(default=8, metadata=positive())  # replies interleaved at once
    max_queue: int = field(default=64, metadata=positive())  # waiting beyond that: 503
    max_choices: int = field(default=4, metadata=positive())  # largest `n` of one request
    temperature: float = field(default=0.6, metadata=between(0, 2))  # defaults of a request
    top_k: int | None = field(default=50, metadata=positive())
    tools: bool = True  # run the model's Python tool calls (when its tokenizer has the tool tokens)
    tool_wall_s: float = field(default=3.0, metadata=positive())
    tool_memory_mb: int = field(default=256, metadata=positive())
    tool_workers: int | None = field(default=None, metadata=positive())  # tool calls run at once; None: half the CPUs
    access_log: bool = True  # one line per request: method, path, status, seconds


def read_serve_settings(node: Mapping | None, key: str = "serve") -> ServeSettings:
    """The `serve` block; a `token` in it is refused (the run folder and the process list would show it)."""
    from omegaconf import DictConfig, OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    if plain.pop("token", None) is not None:
        raise UserError(f"{key}.token would be written into the run folder and shown in the process list: put the token in "
                        f"the {TOKEN_ENV} environment variable, or in a file readable only by you and give {key}.token_file=<path>")
    return parse_settings(ServeSettings, plain, key)


BLOCKS = {"serve": read_serve_settings}  # checked before torch (hylab.settings.check_blocks)
