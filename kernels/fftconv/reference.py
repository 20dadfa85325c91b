"""FFT causal convolution (spec §2.6, §2.7): y[t] = sum_{m<=t} h[m] u[t-m], zero-padded to 2L so the
circular convolution equals the linear one. fp32.

Legend: B batch, L length, D channels.
"""

from __future__ import annotations

import torch


def fftconv_ref(u_BLD: torch.Tensor, h_LD: torch.Tensor) -> torch.Tensor:
    """Causal convolution of every channel of u with its own filter h (h[0] meets the current sample).
    h may be longer than u (truncated) or shorter (zero-padded). Returns fp32."""
    L = u_BLD.shape[1]
    n = 2 * L
    h_LD = h_LD[:L].float()
    U = torch.fft.rfft(u_BLD.float(), n=n, dim=1)
    H = torch.fft.rfft(h_LD, n=n, dim=0)
    return torch.fft.irfft(U * H.unsqueeze(0), n=n, dim=1)[:, :L]
