"""The Hyena-LR modal filter: the long convolution y = h * u + D u with h[m] = sum_s R_s exp(lam_s m)
(spec §2.7), its recurrent state across chunks, and the dispatch between the FFT reference (the spec), the
chunked PyTorch form (the CPU path) and the chunked Triton kernel (CUDA, forward and backward)."""

from __future__ import annotations

import importlib.util

import torch

from .chunked import modal_conv_chunked_ref
from .reference import (modal_conv_ref, modal_filter_ref, modal_recurrence_ref, modal_state_output_ref,
                        modal_state_update_ref)

BACKENDS = ("auto", "triton", "chunked", "reference")


def resolve_backend(backend: str, u_BLD: torch.Tensor, state_size: int) -> str:
    """'auto': Triton on CUDA (the kernels hold S = 16 states, Evo 2's), else the chunked PyTorch form (exact,
    and faster than the FFT on CPU: see README.md)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} for modal_conv: use one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if u_BLD.is_cuda and state_size == 16 and importlib.util.find_spec("triton") is not None:
        return "triton"
    return "chunked"


def modal_conv(u_BLD: torch.Tensor, log_poles_DS: torch.Tensor, residues_DS: torch.Tensor,
               D_D: torch.Tensor, sigma_BDS: torch.Tensor | None = None, *, return_state: bool = False,
               backend: str = "auto"):
    """Hyena-LR's inner operator, continuing from the modal state sigma (zero if None).

    u (B, L, D) any float dtype; log_poles, residues (D, S); D (D,); sigma (B, D, S) fp32 or None.
    Returns y (B, L, D) fp32, and with return_state also the state after u (B, D, S) fp32 (no gradient).
    Gradients flow to u, log_poles, residues and D. backend: "auto" | "triton" | "chunked" | "reference"
    (the 2L FFT over the materialised filter, the spec)."""
    if u_BLD.ndim != 3:
        raise ValueError(f"u must be (B, L, D), got shape {tuple(u_BLD.shape)}")
    B, L, D = u_BLD.shape
    if log_poles_DS.ndim != 2 or log_poles_DS.shape[0] != D or residues_DS.shape != log_poles_DS.shape:
        raise ValueError(f"log_poles and residues must both be (D={D}, S), got {tuple(log_poles_DS.shape)} "
                         f"and {tuple(residues_DS.shape)}")
    if D_D.shape != (D,):
        raise ValueError(f"D must be ({D},), got {tuple(D_D.shape)}")
    S = log_poles_DS.shape[1]
    if sigma_BDS is not None and sigma_BDS.shape != (B, D, S):
        raise ValueError(f"sigma must be ({B}, {D}, {S}), got {tuple(sigma_BDS.shape)}")
    chosen = resolve_backend(backend, u_BLD, S)
    if L == 0:  # nothing to convolve: the state passes through unchanged
        y_BLD = u_BLD.new_zeros(B, 0, D, dtype=torch.float32)
        sigma_out = sigma_BDS.float() if sigma_BDS is not None else u_BLD.new_zeros(B, D, S, dtype=torch.float32)
        return (y_BLD, sigma_out) if return_state else y_BLD
    if chosen == "triton":
        if sigma_BDS is not None and sigma_BDS.requires_grad and torch.is_grad_enabled():
            raise ValueError("modal_conv's triton backend treats the state sigma as a constant: detach it")
        if S != 16:
            raise ValueError(f"modal_conv's triton backend holds 16 states per channel, got S={S}")
        from .triton import modal_conv_triton
        y_BLD, sigma_out = modal_conv_triton(u_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS)
    elif chosen == "chunked":
        y_BLD, sigma_out = modal_conv_chunked_ref(u_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS,
                                                  with_state=return_state)
    else:
        y_BLD, sigma_out = modal_conv_ref(u_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS,
                                          with_state=return_state)
    return (y_BLD, sigma_out) if return_state else y_BLD


__all__ = ["BACKENDS", "modal_conv", "modal_conv_chunked_ref", "modal_conv_ref", "modal_filter_ref",
           "modal_recurrence_ref", "modal_state_output_ref", "modal_state_update_ref", "resolve_backend"]
