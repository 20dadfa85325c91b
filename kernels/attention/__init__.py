"""Causal attention with rotary position embeddings."""

from .reference import apply_rotary_ref, attention_ref, rotary_tables


def attention(q_BHLE, k_BHTE, v_BHTE, *, backend="auto"):
    """Causal attention of the last L positions over T keys; see `attention_ref`."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown backend {backend!r} for attention")
    return attention_ref(q_BHLE, k_BHTE, v_BHTE)


__all__ = ["attention", "attention_ref", "apply_rotary_ref", "rotary_tables"]
