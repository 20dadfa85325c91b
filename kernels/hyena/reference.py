"""Fused Hyena-SE / Hyena-MR core (spec §2.4 steps 3-5, §2.5, §2.6): the specification, as the composition of
the existing reference ops, exactly as the model's reference path computes it.

Legend: B batch, L length, D channels (d_model), C = 3D projection channels, F featurizer length (3),
G filter groups, K filter length.
"""

from __future__ import annotations

import torch

from ..fftconv.reference import fftconv_ref
from ..fir.reference import fir_ref


def hyena_conv_ref(z_BLC: torch.Tensor, featurizer_CF: torch.Tensor, h_GK: torch.Tensor,
                   skip_D: torch.Tensor | None = None, *, current_tap: str) -> torch.Tensor:
    """y = q * (h * (k v) [+ D k v]) from the projected features z (B, L, 3D); returns (B, L, D) in z's dtype.
    current_tap="last": Hyena-SE (cross-correlation taps, no skip); "first": Hyena-MR (convolution taps,
    FFT in fp32, skip D required)."""
    B, L, C = z_BLC.shape
    D = C // 3
    zf_BLC = fir_ref(z_BLC, featurizer_CF, current_tap="last")         # (1) featurizer, per channel
    q_BLD, k_BLD, v_BLD = zf_BLC.view(B, L, D, 3).unbind(-1)           # (2) channel 3c -> q, 3c+1 -> k, 3c+2 -> v
    u_BLD = k_BLD * v_BLD                                              # (3) pre-gate
    if current_tap == "last":
        s_BLD = fir_ref(u_BLD, h_GK, current_tap="last")               # (4) SE: 7 taps, h[K-1] meets now
    elif current_tap == "first":
        h_KD = h_GK.float().repeat_interleave(D // h_GK.shape[0], dim=0).t()
        s_BLD = fftconv_ref(u_BLD, h_KD) + skip_D.float() * u_BLD.float()  # (4) MR: h[0] meets now, + D u
    else:
        raise ValueError(f"current_tap must be 'first' or 'last', got {current_tap!r}")
    return q_BLD * s_BLD.to(z_BLC.dtype)                               # (5) post-gate
