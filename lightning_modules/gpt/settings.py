"""Settings of the GPT family's config targets (torch-free): the net's config, the module, the
throughput callback and the sampling settings of task=generate / task=chat.

`GPTConfig` is both the net's constructor argument and its schema, so a checkpoint's embedded
config, the yaml and the check before a run agree by construction.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hylab.settings import between, non_negative, positive


@dataclass
class GPTConfig:
    vocab_size: int = field(default=4096, metadata=positive())
    sequence_len: int = field(default=256, metadata=positive())  # training context
    n_layer: int = field(default=4, metadata=positive())
    n_head: int = field(default=4, metadata=positive())
    n_kv_head: int | None = field(default=None, metadata=positive())  # None: as many as n_head; fewer: grouped-query attention
    n_embd: int = field(default=256, metadata=positive())
    mlp_ratio: int = field(default=4, metadata=positive())
    logit_softcap: float = field(default=15.0, metadata=non_negative())  # 0: no soft-cap
    rope_base: float = field(default=10000.0, metadata=positive())
    max_positions: int | None = field(default=None, metadata=positive())  # rotary table length (generation); None: 4 x sequence_len

    def __post_init__(self):
        self.n_kv_head = self.n_kv_head or self.n_head
        self.max_positions = self.max_positions or 4 * self.sequence_len
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of even size")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GPTNetSettings:
    """`GPT` takes only its `config` node (an object, checked as GPTConfig)."""


@dataclass
class GPTModelSettings:
    # net, matrix_optimizer, embedding_optimizer and scheduler are objects (checked by their own
    # targets); `net` may be null (the net comes from `init_from`), `scheduler` null (constant lr).
    net: Any = None
    scheduler: Any = None
    head_lr: float = field(default=0.004, metadata=positive())
    compile: bool = False
    init_from: str | None = None


@dataclass
class WarmupWarmdownSettings:
    """The schedule's own keys (total_steps and steps_per_epoch come from the Trainer)."""

    warmup_steps: int = field(default=0, metadata=non_negative())
    warmdown_ratio: float = field(default=0.4, metadata=between(0, 1))
    final_lr_ratio: float = field(default=0.0, metadata=between(0, 1))


@dataclass
class ThroughputSettings:
    window_size: int = field(default=20, metadata=positive())


@dataclass
class GenerationSettings:
    """conf/generation/gpt.yaml holds the values (no defaults here: one source of truth)."""

    prompt: str
    max_new_tokens: int = field(metadata=positive())
    num_samples: int = field(metadata=positive())
    temperature: float = field(metadata=non_negative())  # 0: greedy
    top_k: int | None = field(metadata=positive())  # None: the whole vocabulary
    seed: int | None
    use_cache: bool


@dataclass
class GPTRLModelSettings(GPTModelSettings):
    """GPTRLModel (lightning_modules/gpt/rl.py): the module's keys plus the sampling of answers."""

    samples_per_problem: int = field(default=8, metadata=positive())
    max_new_tokens: int = field(default=48, metadata=positive())
    temperature: float = field(default=1.0, metadata=non_negative())
    top_k: int | None = field(default=None, metadata=positive())
    eval_samples: int = field(default=8, metadata=positive())
    tool_wall_s: float = field(default=3.0, metadata=positive())


@dataclass
class ArithmeticEvalSettings:
    """task=arithmetic_eval: held-out arithmetic problems, `samples` answers each."""

    split: Literal["val", "test"] = "test"
    problems: int = field(default=200, metadata=positive())
    samples: int = field(default=8, metadata=positive())
    temperature: float = field(default=1.0, metadata=non_negative())
    top_k: int | None = field(default=None, metadata=positive())
    max_new_tokens: int = field(default=48, metadata=positive())
    tools: bool = True
    max_operand: int = field(default=99, metadata=positive())
    seed: int = 0


SCHEMAS = {
    "GPTRLModel": GPTRLModelSettings,
    "GPTLanguageModel": GPTModelSettings,
    "GPT": GPTNetSettings,
    "GPTConfig": GPTConfig,
    "warmup_warmdown": WarmupWarmdownSettings,
    "token_throughput_monitor": ThroughputSettings,
}
