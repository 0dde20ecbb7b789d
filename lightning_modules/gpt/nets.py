"""A small GPT with the modern recipe (nanochat / modded-nanogpt lineage), readable top to bottom.

- rotary position embeddings (Su et al. 2021, arXiv:2104.09864), no learned positions
- QK-norm: queries and keys RMS-normalized after the rotation (Dehghani et al. 2023, arXiv:2302.05442)
- parameter-free RMSNorm before attention, before the MLP, after the embedding and before the head
- ReLU² MLP (So et al. 2021, "Primer", arXiv:2109.08668); no biases anywhere
- untied token embedding and output head; logits soft-capped: c * tanh(z / c) (Gemma 2)
- grouped-query attention when n_kv_head < n_head (Ainslie et al. 2023), all through SDPA
- output projections of attention and MLP start at zero, so each block starts as the identity

`forward` returns the logits and takes an optional KV cache (engine.py) for incremental decoding;
`loss` is the training loss (losses.py), with the head fused into it. The config dataclass `GPTConfig` is in settings.py (torch-free).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.gpt.fused import relu_squared, rotate_half_pairs
from lightning_modules.gpt.losses import next_token_loss, softcapped_head_loss
from lightning_modules.gpt.settings import GPTConfig


def norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm: x / sqrt(mean(x^2) + eps)."""
    return F.rms_norm(x, (x.size(-1),))


def rotary_tables(head_dim: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of angle t * base^(-2i/d) for positions t < length, pairs i < d/2."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x1_i, x2_i) of the two halves of the head by its position's angle:
    (x1 cos + x2 sin, x2 cos - x1 sin), with its backward written out (fused.py)."""
    return rotate_half_pairs(x, cos.to(x.dtype), sin.to(x.dtype))


def causal_mask_with_cache(queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """Query i (the (keys - queries + i)-th position) sees keys up to and including its own position."""
    rows = torch.arange(queries, device=device)[:, None] + (keys - queries)
    return torch.arange(keys, device=device)[None, :] <= rows


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, config.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache=None) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        if kv_cache is not None:
            k, v = kv_cache.insert(self.layer_index, k, v)
        queries, keys = q.size(2), k.size(2)
        gqa = self.n_kv_head != self.n_head
        if queries == keys:  # training, or the prefill of an empty cache
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:  # decoding: the new queries see the whole cache and each other causally
            mask = causal_mask_with_cache(queries, keys, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(relu_squared(self.c_fc(x)))  # relu(x)^2 (fused.py)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_index: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_index)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache=None) -> torch.Tensor:
        x = x + self.attn(norm(x), cos, sin, kv_cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        cos, sin = rotary_tables(config.head_dim, config.max_positions, config.rope_base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.init_weights()

    def extend_context(self, sequence_len: int) -> None:
        """Train on longer sequences than the checkpoint's (a fine-tune): the config records the
        new trained context and the rotary table grows to cover it (the weights do not change)."""
        import dataclasses

        max_positions = max(self.config.max_positions, sequence_len)
        self.config = dataclasses.replace(self.config, sequence_len=sequence_len, max_positions=max_positions)
        cos, sin = rotary_tables(self.config.head_dim, max_positions, self.config.rope_base)
        self.cos, self.sin = cos.to(self.cos.device), sin.to(self.sin.device)

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init: unit-variance embedding, a near-zero head, input projections uniform
        with std 1/sqrt(n_embd), output projections zero."""
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        bound = math.sqrt(3.0 / self.config.n_embd)  # uniform(-a, a) has std a / sqrt(3)
        for block in self.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)

    def features(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        """The normed last hidden state (B, T, C) that the head reads."""
        T = idx.size(1)
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.config.max_positions:
            raise ValueError(f"{start + T} positions exceed the rotary table of {self.config.max_positions} (max_positions)")
        cos, sin = self.cos[start : start + T], self.sin[start : start + T]
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return norm(x)

    def forward(self, idx: torch.Tensor, kv_cache=None) -> torch.Tensor:
        """Logits (B, T, V) in float32."""
        logits = self.lm_head(self.features(idx, kv_cache)).float()
        cap = self.config.logit_softcap
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, equal to `next_token_loss(self(idx), targets)`: in fp32
        the head, soft-cap and loss run fused (losses.softcapped_head_loss, the largest cost of a
        CPU step); under autocast through the logits, where the precision plugin expects them."""
        if torch.is_autocast_enabled(idx.device.type):
            return next_token_loss(self(idx), targets)
        hidden = self.features(idx)
        return softcapped_head_loss(hidden.flatten(0, 1), self.lm_head.weight, targets.flatten(), self.config.logit_softcap)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6 N for the matmuls of forward + backward (Kaplan et al. 2020,
        arXiv:2001.08361; N without the embedding, a lookup), plus 12 L H d T for attention scores
        and values over a context of T = sequence_len (Chowdhery et al. 2022, PaLM, app. B)."""
        c = self.config
        matmul_params = self.num_parameters() - self.wte.weight.numel()
        return 6 * matmul_params + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len
