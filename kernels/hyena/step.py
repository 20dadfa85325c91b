"""One cached-decode token through a Hyena block's core (spec §6.2): everything between the input and output
projections, with the recurrent state updated in place. `hyena_step_ref` is the specification (plain PyTorch,
the decoder's own maths); `hyena_step` dispatches to one fused Triton kernel per step (step_triton.py), which
replaces ~15 tiny element-wise kernels per block and token.

  featurizer  win = [tail | z],  z^ = sum_k w[k] win[k] (fp32, cast to z's dtype),  tail <- win[1:]
  gates       q, k, v = z^[3c], z^[3c+1], z^[3c+2];  u = k v (in z's dtype)
  S / M       win = [tail | u],  s = sum_k h[k] win[k] (+ D u for M),  tail <- win[1:]   (h's last row meets u)
  L           sigma <- p sigma + u  (fp32, in place);  s = sum_s R_s sigma_s + D u
  output      y = q * s (s cast to z's dtype first)

Legend: B batch, D channels (d_model), C = 3D projection channels, F featurizer length, K filter length,
S modal states per channel.
"""

from __future__ import annotations

import torch

from . import triton_available

KINDS = ("S", "M", "L")


def hyena_step_ref(z_BC: torch.Tensor, featurizer_tail_BFC: torch.Tensor, featurizer_FC: torch.Tensor, *,
                   kind: str, filter_tail_BKD: torch.Tensor | None = None, filter_KD: torch.Tensor | None = None,
                   sigma_BDS: torch.Tensor | None = None, poles_DS: torch.Tensor | None = None,
                   residues_DS: torch.Tensor | None = None, skip_D: torch.Tensor | None = None) -> torch.Tensor:
    """y (B, D) in z's dtype; featurizer_tail (B, F-1, C), filter_tail (B, K-1, D) and sigma (B, D, S) fp32 are
    advanced by one token in place. Taps are fp32 with the last row meeting the current sample: featurizer
    (F, C), filter (K, D) (S: cross-correlation order as stored; M: the convolution filter flipped)."""
    B, C = z_BC.shape
    D, dt = C // 3, z_BC.dtype
    win_BFC = torch.cat([featurizer_tail_BFC, z_BC[:, None]], dim=1)
    zf_BC = (win_BFC.float() * featurizer_FC).sum(1).to(dt)
    featurizer_tail_BFC.copy_(win_BFC[:, 1:])
    q_BD, k_BD, v_BD = zf_BC.view(B, D, 3).unbind(-1)  # channel 3c -> q, 3c+1 -> k, 3c+2 -> v
    u_BD = k_BD * v_BD
    if kind == "L":
        sigma_BDS.mul_(poles_DS).add_(u_BD.float()[:, :, None])
        s_BD = ((sigma_BDS * residues_DS).sum(-1) + skip_D * u_BD.float()).to(dt)
    else:
        win_BKD = torch.cat([filter_tail_BKD, u_BD[:, None]], dim=1)
        s_BD = (win_BKD.float() * filter_KD).sum(1)
        filter_tail_BKD.copy_(win_BKD[:, 1:])
        if kind == "M":
            s_BD = s_BD + skip_D * u_BD.float()
        s_BD = s_BD.to(dt)
    return q_BD * s_BD


def _check(z_BC, featurizer_tail_BFC, featurizer_FC, kind, filter_tail_BKD, filter_KD, sigma_BDS, poles_DS,
           residues_DS, skip_D) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if z_BC.dim() != 2 or z_BC.shape[1] % 3:
        raise ValueError(f"z must be (B, 3D), got {tuple(z_BC.shape)}")
    (B, C), D = z_BC.shape, z_BC.shape[1] // 3
    F = featurizer_FC.shape[0]
    if featurizer_FC.shape != (F, C) or featurizer_tail_BFC.shape != (B, F - 1, C):
        raise ValueError(f"featurizer taps (F, {C}) and tail ({B}, F-1, {C}) expected, got "
                         f"{tuple(featurizer_FC.shape)} and {tuple(featurizer_tail_BFC.shape)}")
    if kind == "L":
        if sigma_BDS is None or poles_DS is None or residues_DS is None or skip_D is None:
            raise ValueError("kind 'L' needs sigma, poles, residues and skip")
        S = poles_DS.shape[-1]
        if (poles_DS.shape != (D, S) or residues_DS.shape != (D, S) or sigma_BDS.shape != (B, D, S)
                or sigma_BDS.dtype != torch.float32):
            raise ValueError(f"poles/residues ({D}, S) and fp32 sigma ({B}, {D}, S) expected, got "
                             f"{tuple(poles_DS.shape)}, {tuple(residues_DS.shape)}, {tuple(sigma_BDS.shape)}")
    else:
        if filter_tail_BKD is None or filter_KD is None or ((kind == "M") != (skip_D is not None)):
            raise ValueError(f"kind {kind!r} needs the filter tail and taps" + (" and skip" if kind == "M" else
                                                                                 ", and no skip"))
        K = filter_KD.shape[0]
        if filter_KD.shape != (K, D) or filter_tail_BKD.shape != (B, K - 1, D):
            raise ValueError(f"filter taps (K, {D}) and tail ({B}, K-1, {D}) expected, got "
                             f"{tuple(filter_KD.shape)} and {tuple(filter_tail_BKD.shape)}")
    if skip_D is not None and skip_D.shape != (D,):
        raise ValueError(f"skip must be ({D},), got {tuple(skip_D.shape)}")


def _kernel_layout(z_BC, featurizer_tail_BFC, featurizer_FC, kind, filter_tail_BKD, filter_KD, sigma_BDS, poles_DS,
                   residues_DS, skip_D) -> str | None:
    """What the kernel's memory layout lacks (None: it runs): the state is written in place, so it cannot be
    made contiguous or cast on the way in."""
    tails = [t for t in (featurizer_tail_BFC, filter_tail_BKD) if t is not None]
    params = [t for t in (featurizer_FC, filter_KD, poles_DS, residues_DS, skip_D) if t is not None]
    if min(t.shape[1] for t in tails) == 0 or z_BC.shape[0] == 0:
        return "non-empty tails and batch"  # F = 1 or K = 1: no Evo 2 model has one
    state = tails + ([sigma_BDS] if sigma_BDS is not None else [])
    if not all(t.is_contiguous() for t in state + params):
        return "contiguous state buffers and taps"
    if z_BC.stride(1) != 1 or any(t.dtype != z_BC.dtype for t in tails):
        return f"contiguous z rows and FIR tails of z's dtype {z_BC.dtype}"
    if any(t.dtype != torch.float32 for t in params):
        return "fp32 taps, poles, residues and skip"
    return None


def hyena_step(z_BC: torch.Tensor, featurizer_tail_BFC: torch.Tensor, featurizer_FC: torch.Tensor, *,
               kind: str, filter_tail_BKD: torch.Tensor | None = None, filter_KD: torch.Tensor | None = None,
               sigma_BDS: torch.Tensor | None = None, poles_DS: torch.Tensor | None = None,
               residues_DS: torch.Tensor | None = None, skip_D: torch.Tensor | None = None,
               backend: str = "auto") -> torch.Tensor:
    """One token of a Hyena-SE ("S"), -MR ("M") or -LR ("L") core; see `hyena_step_ref` for the maths and the
    arguments (inference only: no autograd). backend: "triton" (CUDA, or CPU under TRITON_INTERPRET=1),
    "reference", or "auto" (triton on CUDA when Triton imports and the layout suits it). The kernel writes the
    state in place: the buffers must be contiguous, the tails of z's dtype, the taps fp32 and contiguous."""
    args = (z_BC, featurizer_tail_BFC, featurizer_FC, kind, filter_tail_BKD, filter_KD, sigma_BDS, poles_DS,
            residues_DS, skip_D)
    _check(*args)
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"unknown backend {backend!r} for hyena_step")
    if backend == "auto":
        backend = "triton" if triton_available(z_BC) and _kernel_layout(*args) is None else "reference"
    if backend == "reference":
        return hyena_step_ref(z_BC, featurizer_tail_BFC, featurizer_FC, kind=kind, filter_tail_BKD=filter_tail_BKD,
                              filter_KD=filter_KD, sigma_BDS=sigma_BDS, poles_DS=poles_DS, residues_DS=residues_DS,
                              skip_D=skip_D)
    problem = _kernel_layout(*args)
    if problem:
        raise ValueError(f"hyena_step's triton backend needs {problem}")
    from .step_triton import hyena_step_triton
    return hyena_step_triton(z_BC, featurizer_tail_BFC, featurizer_FC, kind, filter_tail_BKD, filter_KD, sigma_BDS,
                             poles_DS, residues_DS, skip_D)


__all__ = ["hyena_step", "hyena_step_ref"]
