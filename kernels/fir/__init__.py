"""Causal FIR filters: the featurizer (K=3), Hyena-SE (K=7) and the direct form of Hyena-MR (K=128)."""

from .reference import fir_ref, next_tail


def fir(x_BLC, h_GK, *, tail_BKC=None, current_tap="last", backend="auto"):
    """Grouped causal FIR of x (B, L, C) with filters h (G, K); see `fir_ref` for the maths.
    Computes in fp32 and returns x's dtype. Only the reference backend exists so far."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown backend {backend!r} for fir")
    return fir_ref(x_BLC, h_GK, tail_BKC=tail_BKC, current_tap=current_tap)


__all__ = ["fir", "fir_ref", "next_tail"]
