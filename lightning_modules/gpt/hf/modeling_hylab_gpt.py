"""hylab's GPT for `transformers` (copied into every export folder; loaded with trust_remote_code).

The same net as lightning_modules/gpt/nets.py, computed the same way, so its logits equal ours:
a parameter-free RMSNorm after the embedding, before attention, before the MLP and before the
head; rotary positions (each head's two halves rotated as pairs) followed by QK-norm; grouped-query
attention through SDPA; a ReLU² MLP; no biases; an untied head whose logits are soft-capped,
c * tanh(z / c). No native transformers architecture has this combination (the embedding norm,
the non-gated ReLU² MLP and QK-norm together), hence this file.

The weights keep the training code's names under `model.` (model.wte, model.blocks.N.attn.c_q,
...) and `lm_head`. Decoding uses transformers' Cache (`generate()` brings a DynamicCache); a 2-D
attention mask (left padding in a batch) is honoured. Self-contained: torch and transformers only.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_hylab_gpt import HylabGPTConfig

# The output field that carries the cache: `cache` since transformers 5.2x, `past_key_values` before.
CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm: x / sqrt(mean(x^2) + eps), eps the dtype's machine epsilon."""
    return F.rms_norm(x, (x.size(-1),))


def rotary(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, head_dim / 2) of angle t * base^(-2i/d) at each position t."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[..., None] * inv_freq
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def attention_mask_for(queries: int, keys: int, padding: torch.Tensor | None, device) -> torch.Tensor | None:
    """Boolean (B or 1, 1, queries, keys) mask: causal over the cache, and no padded key. None where
    plain causal attention (is_causal) is exact: no cache and no padding."""
    if padding is not None and bool(padding.all()):
        padding = None
    if padding is None and queries == keys:
        return None
    rows = torch.arange(queries, device=device)[:, None] + (keys - queries)
    mask = (torch.arange(keys, device=device)[None, :] <= rows)[None, None]
    if padding is not None:
        mask = mask & padding[:, None, None, -keys:].bool()
        mask = mask | ~mask.any(-1, keepdim=True)  # a padded query sees nothing: let it see all (its output is unused)
    return mask


class HylabGPTAttention(nn.Module):
    def __init__(self, config: HylabGPTConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        width = config.hidden_size
        self.c_q = nn.Linear(width, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(width, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(width, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(width, width, bias=False)

    def forward(self, x, cos, sin, mask, cache: Cache | None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_index)
        gqa = self.n_kv_head != self.n_head
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class HylabGPTMLP(nn.Module):
    def __init__(self, config: HylabGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())


class HylabGPTBlock(nn.Module):
    def __init__(self, config: HylabGPTConfig, layer_index: int):
        super().__init__()
        self.attn = HylabGPTAttention(config, layer_index)
        self.mlp = HylabGPTMLP(config)

    def forward(self, x, cos, sin, mask, cache) -> torch.Tensor:
        x = x + self.attn(norm(x), cos, sin, mask, cache)
        return x + self.mlp(norm(x))


class HylabGPTPreTrainedModel(PreTrainedModel):
    config_class = HylabGPTConfig
    base_model_prefix = "model"
    _no_split_modules = ["HylabGPTBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """Only for weights a folder lacks (an export holds them all): small normal values."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)


class HylabGPTModel(HylabGPTPreTrainedModel):
    """The embedding and the blocks; returns the normed last hidden state."""

    def __init__(self, config: HylabGPTConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = nn.ModuleList(HylabGPTBlock(config, i) for i in range(config.num_hidden_layers))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None) -> torch.Tensor:
        T = input_ids.size(1)
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:  # left padding: count only real tokens
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -T:]
            else:
                position_ids = torch.arange(past, past + T, device=input_ids.device)[None]
        cos, sin = rotary(position_ids, self.config.head_dim, self.config.rope_base)
        mask = attention_mask_for(T, past + T, attention_mask, input_ids.device)
        x = norm(self.wte(input_ids))
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        return norm(x)


class HylabGPTForCausalLM(HylabGPTPreTrainedModel, GenerationMixin):
    def __init__(self, config: HylabGPTConfig):
        super().__init__(config)
        self.model = HylabGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        if inputs_embeds is not None:
            raise ValueError("this model takes input_ids (its embedding is normed inside the model)")
        cache = cache if cache is not None else kwargs.get("past_key_values")
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        hidden = self.model(input_ids, attention_mask, position_ids, cache if use_cache else None)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden).float()
        cap = self.config.logit_softcap
        if cap:
            logits = cap * torch.tanh(logits / cap)
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{CACHE_FIELD: cache if use_cache else None})
