"""Token merging (ToMe: Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023), written
from the paper's description.

In each block, between the attention and the MLP, r tokens are merged away:

1. bipartite soft matching on the attention keys (mean over heads): the tokens are split
   alternately into sets A (even positions) and B (odd positions); each token of A is joined
   to its most cosine-similar token of B; the r edges of highest similarity are kept;
2. each merged A token is averaged into its B partner, weighted by token size s (how many
   input patches a token stands for): x_b <- (s_a x_a + s_b x_b) / (s_a + s_b), s_b <- s_a + s_b;
3. proportional attention: softmax(q k^T / sqrt(d) + log s), the log sizes as an additive mask
   on the keys, so a merged token counts as many times as the patches it holds.

Protected tokens (the first `protected`: class, distillation, register tokens) are never merged;
the surviving tokens keep their order, so the class token stays first. sum(s) = N always.
Windowed attention (Swin) has no global token set to match in and is not supported.
"""

import torch
import torch.nn.functional as F
from torch import nn


def attention(attn: nn.Module, x: torch.Tensor, sizes: torch.Tensor | None, proportional: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, keys averaged over heads) of a timm ViT Attention module on x (B, N, C), with
    log(sizes) added to the attention logits when `proportional`."""
    batch, count, _ = x.shape
    qkv = attn.qkv(x).reshape(batch, count, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = None
    if proportional and sizes is not None:
        bias = sizes.log()[:, None, None, :, 0].to(q.dtype)  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    out = out.transpose(1, 2).reshape(batch, count, -1)
    out = attn.proj_drop(attn.proj(attn.norm(out)))
    return out, k.mean(dim=1)


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which A tokens to keep / merge, and the B token each merged one goes into.

    Returns (kept_a, merged_a, destination), indices into A = even positions and B = odd positions;
    kept_a is sorted so the surviving tokens keep their order."""
    metric = F.normalize(metric, dim=-1)
    a, b = metric[:, ::2], metric[:, 1::2]
    scores = a @ b.transpose(1, 2)  # (B, Na, Nb)
    for index in range(protected):
        if index % 2 == 0:
            scores[:, index // 2, :] = -torch.inf
        else:
            scores[:, :, index // 2] = -torch.inf
    best, partner = scores.max(dim=-1)
    order = best.argsort(dim=-1, descending=True)
    mergeable = a.shape[1] - (protected + 1) // 2
    r = max(0, min(r, mergeable, b.shape[1] - protected // 2))
    merged_a = order[:, :r]
    kept_a = order[:, r:].sort(dim=-1).values
    return kept_a, merged_a, partner.gather(1, merged_a)


def merge_tokens(x: torch.Tensor, sizes: torch.Tensor, kept_a, merged_a, destination) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average of each merged A token into its B token; (x, sizes) of the N - r tokens."""
    weighted = x * sizes
    channels = x.shape[-1]
    a, b = weighted[:, ::2], weighted[:, 1::2]
    size_a, size_b = sizes[:, ::2], sizes[:, 1::2]

    def take(t, index):
        return t.gather(1, index[..., None].expand(-1, -1, t.shape[-1]))

    b = b.scatter_add(1, destination[..., None].expand(-1, -1, channels), take(a, merged_a))
    size_b = size_b.scatter_add(1, destination[..., None], take(size_a, merged_a))
    # tokens in their original order: kept A tokens and B tokens interleave by position
    kept_positions = kept_a * 2
    b_positions = torch.arange(b.shape[1], device=x.device).expand(x.shape[0], -1) * 2 + 1
    order = torch.cat([kept_positions, b_positions], dim=1).argsort(dim=1)
    merged = torch.cat([take(a, kept_a), b], dim=1)
    new_sizes = torch.cat([take(size_a, kept_a), size_b], dim=1)
    merged, new_sizes = take(merged, order), take(new_sizes, order)
    return merged / new_sizes, new_sizes


def tome_block(block: nn.Module, x: torch.Tensor, sizes: torch.Tensor, r: int, proportional: bool, protected: int):
    """One timm ViT block with merging between attention and MLP: (x, sizes) out."""
    out, keys = attention(block.attn, block.norm1(x), sizes, proportional)
    x = x + block.drop_path1(block.ls1(out))
    if r > 0:
        x, sizes = merge_tokens(x, sizes, *bipartite_soft_matching(keys, r, protected))
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
    return x, sizes
