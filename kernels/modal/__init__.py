"""The Hyena-LR modal filter: the long convolution y = h * u + D u with h[m] = sum_s R_s exp(lam_s m)
(spec §2.7), its recurrent state across chunks, and the dispatch between the FFT reference (the spec), the
chunked PyTorch form (the CPU path) and the chunked Triton kernel (CUDA, forward and backward)."""

from __future__ import annotations

import importlib.util

import torch

from .chunked import modal_conv_chunked_ref
from .reference import (modal_conv_ref, modal_filter_ref, modal_hyena_ref, modal_recurrence_ref,
                        modal_state_output_ref, modal_state_update_ref)

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


def _check_filter(B: int, D: int, log_poles_DS, residues_DS, D_D, sigma_BDS) -> int:
    """The modal filter's shapes against B and D (ValueError otherwise); returns S, the states per channel."""
    if log_poles_DS.ndim != 2 or log_poles_DS.shape[0] != D or residues_DS.shape != log_poles_DS.shape:
        raise ValueError(f"log_poles and residues must both be (D={D}, S), got {tuple(log_poles_DS.shape)} "
                         f"and {tuple(residues_DS.shape)}")
    if D_D.shape != (D,):
        raise ValueError(f"D must be ({D},), got {tuple(D_D.shape)}")
    S = log_poles_DS.shape[1]
    if sigma_BDS is not None and sigma_BDS.shape != (B, D, S):
        raise ValueError(f"sigma must be ({B}, {D}, {S}), got {tuple(sigma_BDS.shape)}")
    return S


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
    S = _check_filter(B, D, log_poles_DS, residues_DS, D_D, sigma_BDS)
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


def modal_hyena(z_BLC: torch.Tensor, featurizer_CF: torch.Tensor, log_poles_DS: torch.Tensor,
                residues_DS: torch.Tensor, D_D: torch.Tensor, sigma_BDS: torch.Tensor | None = None,
                z_tail_B2C: torch.Tensor | None = None, *, return_state: bool = False, backend: str = "auto"):
    """The whole Hyena-LR core from the projected features z (B, L, 3D): y = q^ * (h * u + D u), u = k^ v^,
    featurizer and gates fused with the modal convolution (see `modal_hyena_ref` for the maths).

    featurizer (3D, 3) per-channel taps, the last meeting the current row; log_poles, residues (D, S); D (D,).
    A chunk that continues a sequence passes the state after the previous one: sigma (B, D, S) fp32 and
    z_tail (B, 2, 3D), the previous chunk's last 2 rows of z (both constants for autograd). Returns y (B, L, D)
    in z's dtype, and with return_state also the state sigma after z (B, D, S) fp32. Gradients flow to z,
    featurizer, log_poles, residues and D. backend: "auto" (the fused Triton kernels on CUDA for S = 16,
    else the unfused ops with the chunked form), "triton" (CPU only under TRITON_INTERPRET=1), "chunked", or
    "reference" (the featurizer, the FFT modal convolution and the gates as separate ops: the spec)."""
    if z_BLC.ndim != 3 or z_BLC.shape[-1] % 3:
        raise ValueError(f"z must be (B, L, 3D), got shape {tuple(z_BLC.shape)}")
    B, L, C = z_BLC.shape
    D = C // 3
    if featurizer_CF.shape != (C, 3):
        raise ValueError(f"featurizer must be (3D, 3) = ({C}, 3), got {tuple(featurizer_CF.shape)}")
    if z_tail_B2C is not None and z_tail_B2C.shape != (B, 2, C):
        raise ValueError(f"z_tail must be ({B}, 2, {C}), got {tuple(z_tail_B2C.shape)}")
    S = _check_filter(B, D, log_poles_DS, residues_DS, D_D, sigma_BDS)
    chosen = resolve_backend(backend, z_BLC, S)
    if chosen != "triton" or L == 0:
        def conv(u, lam, R, skip, sigma, with_state):
            out = modal_conv(u, lam, R, skip, sigma, return_state=with_state,
                             backend="reference" if chosen == "reference" else "chunked")
            return out if with_state else (out, None)
        y_BLD, sigma_out = modal_hyena_ref(z_BLC, featurizer_CF, log_poles_DS, residues_DS, D_D, sigma_BDS,
                                           z_tail_B2C, conv=conv, with_state=return_state)
        return (y_BLD, sigma_out) if return_state else y_BLD
    if S != 16:
        raise ValueError(f"modal_hyena's triton backend holds 16 states per channel, got S={S}")
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (sigma_BDS, z_tail_B2C)):
        raise ValueError("modal_hyena's triton backend treats the state sigma and z_tail as constants: detach them")
    from .fused import modal_hyena_triton
    y_BLD, sigma_out = modal_hyena_triton(z_BLC, featurizer_CF, log_poles_DS, residues_DS, D_D, sigma_BDS,
                                          z_tail_B2C)
    return (y_BLD, sigma_out) if return_state else y_BLD


__all__ = ["BACKENDS", "modal_conv", "modal_conv_chunked_ref", "modal_conv_ref", "modal_filter_ref",
           "modal_hyena", "modal_hyena_ref", "modal_recurrence_ref", "modal_state_output_ref",
           "modal_state_update_ref", "resolve_backend"]
