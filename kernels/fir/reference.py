"""Direct causal FIR filter (spec §2.4 step 3, §2.5, §2.6): the specification, fp32, no fusion.

Legend: B batch, L length, C channels, G filter groups, K filter length.
Channel c uses filter g(c) = floor(c / (C / G)) (contiguous groups, spec §2.4).
"""

from __future__ import annotations

import torch


def fir_ref(x_BLC: torch.Tensor, h_GK: torch.Tensor, *, tail_BKC: torch.Tensor | None = None,
            current_tap: str = "last") -> torch.Tensor:
    """y[t, c] = sum_k h[g(c), k] * x[t - (K-1) + k, c] when current_tap == "last" (cross-correlation:
    the featurizer and Hyena-SE), or sum_m h[g(c), m] * x[t - m, c] when current_tap == "first" (true
    convolution: Hyena-MR). `tail_BKC` holds the K-1 inputs before x (zeros when None). fp32 inside."""
    B, L, C = x_BLC.shape
    G, K = h_GK.shape
    h_KC = h_GK.float().repeat_interleave(C // G, dim=0).t()
    if current_tap == "first":
        h_KC = h_KC.flip(0)  # (1) convolution == cross-correlation with the reversed filter
    elif current_tap != "last":
        raise ValueError(f"current_tap must be 'first' or 'last', got {current_tap!r}")
    if tail_BKC is None:
        tail_BKC = x_BLC.new_zeros(B, K - 1, C)
    x_BTC = torch.cat([tail_BKC.to(x_BLC.dtype), x_BLC], dim=1).float()
    # (2) the sum over taps as K shifted multiply-adds in the (B, L, C) layout: no transposes, and for
    # the short filters (K = 3, 7) cheaper on CPU than a grouped conv1d
    y_BLC = x_BTC[:, :L] * h_KC[0]
    for k in range(1, K):
        y_BLC.addcmul_(x_BTC[:, k: k + L], h_KC[k])
    return y_BLC.to(x_BLC.dtype)


def next_tail(x_BLC: torch.Tensor, tail_BKC: torch.Tensor | None, K: int) -> torch.Tensor:
    """The last K-1 inputs after consuming x: the FIR state carried to the next chunk."""
    if tail_BKC is None:
        tail_BKC = x_BLC.new_zeros(x_BLC.shape[0], K - 1, x_BLC.shape[2])
    return torch.cat([tail_BKC.to(x_BLC.dtype), x_BLC], dim=1)[:, x_BLC.shape[1]:]
