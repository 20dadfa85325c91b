"""Fused Hyena-SE / Hyena-MR core: featurizer, q/k/v split, pre-gate, grouped causal convolution, MR's skip
term and post-gate in one pass over the projected features (spec §2.4-2.6, §9.5)."""

from __future__ import annotations

import torch

from .reference import hyena_conv_ref



def _block_len(K: int) -> int:
    """Block of positions: the smallest tensor-core tile (>= 16) with K <= 2 BL, so a filter spans at most
    two blocks besides the current one: 16 for SE's 7 taps (not 128: 37x fewer wasted FLOPs), 64 for MR."""
    return max(16, 1 << (-(-K // 2) - 1).bit_length())


def triton_available(x: torch.Tensor) -> bool:
    if not x.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def hyena_conv(z_BLC: torch.Tensor, featurizer_CF: torch.Tensor, h_GK: torch.Tensor,
               skip_D: torch.Tensor | None = None, *, current_tap: str, backend: str = "auto") -> torch.Tensor:
    """y (B, L, D) = q * (h * (k v) [+ D k v]) from the projected features z (B, L, 3D); see `hyena_conv_ref`.

    featurizer_CF: (3D, F) per-channel featurizer taps (last tap meets the current sample). h_GK: (G, K) filters
    shared by contiguous groups of D/G channels; current_tap="last" (Hyena-SE, cross-correlation order, no skip)
    or "first" (Hyena-MR, convolution order, skip_D (D,) required). Differentiable in z, featurizer, h, skip.
    backend: "triton" (CUDA, or CPU under TRITON_INTERPRET=1), "reference", or "auto" (triton on CUDA)."""
    if z_BLC.dim() != 3 or z_BLC.shape[-1] % 3:
        raise ValueError(f"z must be (B, L, 3D), got {tuple(z_BLC.shape)}")
    D = z_BLC.shape[-1] // 3
    if featurizer_CF.dim() != 2 or featurizer_CF.shape[0] != 3 * D:
        raise ValueError(f"featurizer must be (3D, F) = ({3 * D}, F), got {tuple(featurizer_CF.shape)}")
    if h_GK.dim() != 2 or D % h_GK.shape[0]:
        raise ValueError(f"h must be (G, K) with G dividing D={D}, got {tuple(h_GK.shape)}")
    if current_tap not in ("first", "last"):
        raise ValueError(f"current_tap must be 'first' or 'last', got {current_tap!r}")
    if (current_tap == "first") != (skip_D is not None):
        raise ValueError("the skip term D goes with current_tap='first' (Hyena-MR) only")
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"unknown backend {backend!r} for hyena_conv")
    if (backend == "reference" or (backend == "auto" and not triton_available(z_BLC))
            or featurizer_CF.shape[1] != 3 or _block_len(h_GK.shape[1]) > 64
            or z_BLC.numel() == 0 or z_BLC.shape[1] * z_BLC.shape[2] >= 2 ** 31):
        # the kernels unroll the 3-tap featurizer of every Evo 2 model, blocks of 128 (filters over 128 taps)
        # overflow the H200's shared memory, and offsets inside one sequence are int32: those take the reference
        return hyena_conv_ref(z_BLC, featurizer_CF, h_GK, skip_D, current_tap=current_tap)
    if current_tap == "last" and h_GK.shape[1] <= 7:  # Hyena-SE: the direct register-resident kernel
        from .se_triton import SEConvFn
        return SEConvFn.apply(z_BLC.contiguous(), featurizer_CF.float().contiguous(), h_GK.float().contiguous())
    from .triton import HyenaConvFn
    # the kernels take convolution tap order (h[0] meets the current sample); autograd flips dh back
    h_conv = h_GK.float() if current_tap == "first" else h_GK.float().flip(1)
    skip = skip_D.float() if skip_D is not None else None
    return HyenaConvFn.apply(z_BLC.contiguous(), featurizer_CF.float().contiguous(), h_conv.contiguous(), skip,
                             _block_len(h_GK.shape[1]))


__all__ = ["hyena_conv", "hyena_conv_ref", "triton_available"]
