"""The configuration of an exported hylab GPT, for `transformers` (copied into the export folder).

The field names follow transformers' conventions (hidden_size, num_hidden_layers, ...) so its
generic tools (caches, device maps, parameter counts) read them; `logit_softcap` and `rope_base`
are the net's own. Self-contained: this file imports only transformers.
"""

from transformers import PreTrainedConfig


class HylabGPTConfig(PreTrainedConfig):
    model_type = "hylab_gpt"

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 1024  # mlp_ratio * hidden_size
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    head_dim: int = 64
    max_position_embeddings: int = 256  # the trained context
    rope_base: float = 10000.0
    logit_softcap: float = 15.0  # 0: none
    initializer_range: float = 0.02
    use_cache: bool = True
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
