"""Causal multi-head attention with rotary embeddings (spec §2.9), through torch SDPA.

Legend: B batch, H heads, L query length, T key length (cached + new), E head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rotary_tables(positions_L: torch.Tensor, inv_freq_E2: torch.Tensor, scale: float,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (L, E/2) at positions / scale (position interpolation), computed in fp32 and cast to the
    activation dtype as vtx does before use."""
    freqs = torch.outer(positions_L.float() / scale, inv_freq_E2.float())
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def apply_rotary_ref(x_BHLE: torch.Tensor, cos_LE2: torch.Tensor, sin_LE2: torch.Tensor) -> torch.Tensor:
    """GPT-NeoX rotate-half: pairs dims i and i + E/2; x' = x cos + rotate_half(x) sin, in fp32."""
    x1, x2 = x_BHLE.float().chunk(2, dim=-1)
    cos, sin = cos_LE2.float(), sin_LE2.float()
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x_BHLE.dtype)


# Largest query-block x key mask materialised on devices without a lower-right causal kernel (elements).
MASK_BUDGET = 1 << 24


def attention_ref(q_BHLE: torch.Tensor, k_BHTE: torch.Tensor, v_BHTE: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention where the L queries are the last L of the T key positions.

    A chunk of queries against a long KV cache (streaming, T >> L) never holds an L x T mask or score
    matrix: on CUDA the lower-right causal bias runs in the flash / memory-efficient kernels; elsewhere
    the queries go in blocks small enough that each block's (block x T) mask stays under MASK_BUDGET."""
    L, T = q_BHLE.shape[2], k_BHTE.shape[2]
    if L == T:
        return F.scaled_dot_product_attention(q_BHLE, k_BHTE, v_BHTE, is_causal=True)
    if q_BHLE.device.type == "cuda":
        from torch.nn.attention.bias import causal_lower_right

        return F.scaled_dot_product_attention(q_BHLE, k_BHTE, v_BHTE, attn_mask=causal_lower_right(L, T))
    if q_BHLE.device.type == "cpu":
        try:
            return _cache_then_chunk_cpu(q_BHLE, k_BHTE, v_BHTE)
        except (AttributeError, RuntimeError, TypeError):  # a torch without the fused CPU kernel
            pass
    # queries sit at T-L .. T-1: bottom-right aligned causal mask, one block of queries at a time,
    # each against only the keys it can see
    out_BHLE = torch.empty_like(q_BHLE)
    step = max(1, MASK_BUDGET // T)
    for a in range(0, L, step):
        b = min(L, a + step)
        visible = T - L + b
        mask = torch.ones(b - a, visible, dtype=torch.bool, device=q_BHLE.device).tril(diagonal=visible - (b - a))
        out_BHLE[:, :, a:b] = F.scaled_dot_product_attention(q_BHLE[:, :, a:b], k_BHTE[:, :, :visible],
                                                             v_BHTE[:, :, :visible], attn_mask=mask)
    return out_BHLE


def _cache_then_chunk_cpu(q_BHLE: torch.Tensor, k_BHTE: torch.Tensor, v_BHTE: torch.Tensor) -> torch.Tensor:
    """softmax over [cache | chunk] as two fused attentions merged by their log-sum-exps: the cached
    T-L keys are all visible (no mask), the chunk's own L keys are causal (a square, top-left mask).
    o = (e^lse1 o1 + e^lse2 o2) / (e^lse1 + e^lse2), in fp32. Uses torch's fused CPU flash kernel, which
    returns the log-sum-exp; no L x T mask or score matrix is ever materialised."""
    L, T = q_BHLE.shape[2], k_BHTE.shape[2]
    fused = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    o1, lse1 = fused(q_BHLE, k_BHTE[:, :, :T - L], v_BHTE[:, :, :T - L], 0.0, False)[:2]
    o2, lse2 = fused(q_BHLE, k_BHTE[:, :, T - L:], v_BHTE[:, :, T - L:], 0.0, True)[:2]
    top = torch.maximum(lse1, lse2)
    w1, w2 = (lse1 - top).exp().unsqueeze(-1), (lse2 - top).exp().unsqueeze(-1)
    return ((w1 * o1.float() + w2 * o2.float()) / (w1 + w2)).to(q_BHLE.dtype)
