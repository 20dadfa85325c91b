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


def attention_ref(q_BHLE: torch.Tensor, k_BHTE: torch.Tensor, v_BHTE: torch.Tensor) -> torch.Tensor:
    """Causal softmax attention where the L queries are the last L of the T key positions."""
    L, T = q_BHLE.shape[2], k_BHTE.shape[2]
    if L == T:
        return F.scaled_dot_product_attention(q_BHLE, k_BHTE, v_BHTE, is_causal=True)
    # queries sit at T-L .. T-1: bottom-right aligned causal mask
    mask_LT = torch.ones(L, T, dtype=torch.bool, device=q_BHLE.device).tril(diagonal=T - L)
    return F.scaled_dot_product_attention(q_BHLE, k_BHTE, v_BHTE, attn_mask=mask_LT)
