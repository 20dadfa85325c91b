"""Causal FIR filters: the featurizer (K=3), Hyena-SE (K=7) and the direct form of Hyena-MR (K=128)."""

import torch

from .reference import fir_ref, next_tail

# fir_ref computes in fp32 over its whole (B, L, C) input; blocks of positions bound those fp32 temporaries (for
# 256K tokens of evo2_7b's 12,288 featurizer channels, 12 GiB each for the input and the output copy) and give
# the same numbers.
BLOCK_ELEMENTS = 1 << 26


def fir(x_BLC, h_GK, *, tail_BKC=None, current_tap="last", backend="auto", block_elements=BLOCK_ELEMENTS):
    """Grouped causal FIR of x (B, L, C) with filters h (G, K); see `fir_ref` for the maths.
    Computes in fp32 and returns x's dtype, in blocks of positions of at most `block_elements` elements
    (each block takes the K-1 inputs before it as its tail). Only the reference backend exists so far."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown backend {backend!r} for fir")
    B, L, C = x_BLC.shape
    K = h_GK.shape[1]
    rows = max(K, block_elements // max(1, B * C))
    if L <= rows or K == 1:
        return fir_ref(x_BLC, h_GK, tail_BKC=tail_BKC, current_tap=current_tap)
    blocks = [fir_ref(x_BLC[:, :rows], h_GK, tail_BKC=tail_BKC, current_tap=current_tap)]
    for t0 in range(rows, L, rows):
        blocks.append(fir_ref(x_BLC[:, t0:t0 + rows], h_GK, tail_BKC=x_BLC[:, t0 - (K - 1):t0],
                              current_tap=current_tap))
    return torch.cat(blocks, dim=1)


__all__ = ["fir", "fir_ref", "next_tail"]
