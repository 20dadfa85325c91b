"""FFT convolution for the long filters of Hyena-MR and Hyena-LR."""

from .reference import fftconv_ref


def fftconv(u_BLD, h_LD, *, backend="auto"):
    """Causal per-channel convolution of u (B, L, D) with h (L', D), in fp32; see `fftconv_ref`."""
    if backend not in ("auto", "reference"):
        raise ValueError(f"unknown backend {backend!r} for fftconv")
    return fftconv_ref(u_BLD, h_LD)


__all__ = ["fftconv", "fftconv_ref"]
