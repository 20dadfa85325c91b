"""FFT convolution for the long filters of Hyena-MR and Hyena-LR."""

import torch

from .reference import fftconv_ref

# fftconv_ref holds fp32 spectra of 2L points for every channel at once; blocks of channels bound them (channels
# are independent) without changing the maths.
BLOCK_ELEMENTS = 1 << 26


def fftconv(u_BLD, h_LD, *, backend="auto", block_elements=BLOCK_ELEMENTS):
    """Causal per-channel convolution of u (B, L, D) with h (L', D), in fp32; see `fftconv_ref`. Runs in blocks
    of channels whose spectra hold at most `block_elements` complex values."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown backend {backend!r} for fftconv")
    B, L, D = u_BLD.shape
    cols = max(1, block_elements // max(1, B * (L + 1)))
    if D <= cols:
        return fftconv_ref(u_BLD, h_LD)
    return torch.cat([fftconv_ref(u_BLD[..., d0:d0 + cols], h_LD[:, d0:d0 + cols]) for d0 in range(0, D, cols)],
                     dim=-1)


__all__ = ["fftconv", "fftconv_ref"]
