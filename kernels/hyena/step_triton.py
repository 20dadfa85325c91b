"""The fused one-token Hyena step (cached decode) as one Triton kernel: `hyena_step_triton`.

Legend: B batch, D channels, C = 3D projection channels, F featurizer length, K filter length, S modal states,
BD channels per program. Grid (ceil(D / BD), B); program (j, b) owns channels [j BD, (j+1) BD) of row b: their
three featurizer columns 3c, 3c+1, 3c+2, their filter tail rows or modal states, and y[b, c]. It reads z, the
state and the taps once (the taps once per batch row) and writes back the shifted tails, sigma and y.

Every quantity is rounded where `hyena_step_ref` rounds it (z^ and u to z's dtype, s to z's dtype before the
gate), so the kernel reproduces the reference up to the fp32 summation order.

The tails shift in place (tail[r-1] <- tail[r]): a row's new value is another row's old one, read by another
thread of the program, so the program issues all its loads (z, tails, taps, sigma: one memory round trip),
waits at a barrier, then computes and stores (sigma too: threads may hold replicas of one element). Programs
own disjoint channels, so no two programs touch the same element, and the grid is fixed by the shapes: the step
replays inside a CUDA graph.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton import _empty  # NaN-poisoned under the tests' POISON switch

_KIND = {"S": 0, "M": 1, "L": 2}


@triton.jit
def _window_load(tail_ptr, taps_ptr, col, mcol, ROW, K: tl.constexpr, KP: tl.constexpr):
    """The (K-1, BD) tail of the columns col (row stride ROW in the tail (K-1, ROW) and the taps (K, ROW)), its
    share of the window's dot product in fp32, and the tap that meets the new sample."""
    r = tl.arange(0, KP)[:, None]
    m = (r < K - 1) & mcol[None, :]
    tail = tl.load(tail_ptr + r * ROW + col[None, :], mask=m, other=0.0)
    part = tl.sum(tail.to(tl.float32) * tl.load(taps_ptr + r * ROW + col[None, :], mask=m, other=0.0), axis=0)
    return tail, part, tl.load(taps_ptr + (K - 1) * ROW + col, mask=mcol, other=0.0)


@triton.jit
def _window_store(tail_ptr, tail, x, col, mcol, ROW, K: tl.constexpr, KP: tl.constexpr):
    """tail <- [tail[1:] | x] in place (x in the tail's dtype)."""
    r = tl.arange(0, KP)[:, None]
    m = (r < K - 1) & mcol[None, :]
    tl.store(tail_ptr + (r - 1) * ROW + col[None, :], tail, mask=m & (r >= 1))
    tl.store(tail_ptr + (K - 2) * ROW + col, x, mask=mcol)


@triton.jit
def _hyena_step_kernel(z_ptr, ftail_ptr, fw_ptr, tail_ptr, h_ptr, sigma_ptr, poles_ptr, res_ptr, skip_ptr, y_ptr,
                       D, Z_ROW, F: tl.constexpr, FP: tl.constexpr, K: tl.constexpr, KP: tl.constexpr,
                       S: tl.constexpr, SP: tl.constexpr, KIND: tl.constexpr, BD: tl.constexpr):
    b = tl.program_id(1).to(tl.int64)
    c = tl.program_id(0) * BD + tl.arange(0, BD)
    mc = c < D
    C = 3 * D
    z_ptr += b * Z_ROW
    ftail_ptr += b * (F - 1) * C
    tail_ptr += b * (K - 1) * D
    dt = y_ptr.dtype.element_ty
    # every load first (none depends on another: one memory round trip), then the barrier, then the stores
    zq = tl.load(z_ptr + 3 * c, mask=mc, other=0.0)
    zk = tl.load(z_ptr + 3 * c + 1, mask=mc, other=0.0)
    zv = tl.load(z_ptr + 3 * c + 2, mask=mc, other=0.0)
    tq, pq, wq = _window_load(ftail_ptr, fw_ptr, 3 * c, mc, C, F, FP)
    tk, pk, wk = _window_load(ftail_ptr, fw_ptr, 3 * c + 1, mc, C, F, FP)
    tv, pv, wv = _window_load(ftail_ptr, fw_ptr, 3 * c + 2, mc, C, F, FP)
    if KIND != 0:
        skip = tl.load(skip_ptr + c, mask=mc, other=0.0)
    if KIND == 2:
        j = tl.arange(0, SP)[None, :]
        ms = mc[:, None] & (j < S)
        off = c[:, None] * S + j
        sig_ptr = sigma_ptr + b * D * S + off
        sigma = tl.load(sig_ptr, mask=ms, other=0.0)
        poles = tl.load(poles_ptr + off, mask=ms, other=0.0)
        residues = tl.load(res_ptr + off, mask=ms, other=0.0)
    else:
        tu, pu, hu = _window_load(tail_ptr, h_ptr, c, mc, D, K, KP)
    tl.debug_barrier()  # every old value is read before any is overwritten
    # featurizer (fp32 sums, cast to the model dtype) and the pre-gate u = k v (a product in the model dtype)
    q = (pq + wq * zq.to(tl.float32)).to(dt).to(tl.float32)
    k = (pk + wk * zk.to(tl.float32)).to(dt).to(tl.float32)
    v = (pv + wv * zv.to(tl.float32)).to(dt).to(tl.float32)
    _window_store(ftail_ptr, tq, zq, 3 * c, mc, C, F, FP)
    _window_store(ftail_ptr, tk, zk, 3 * c + 1, mc, C, F, FP)
    _window_store(ftail_ptr, tv, zv, 3 * c + 2, mc, C, F, FP)
    u = (k * v).to(dt)
    uf = u.to(tl.float32)
    if KIND == 2:  # Hyena-LR: the modal state, fp32, in place
        sigma = sigma * poles + uf[:, None]
        tl.store(sig_ptr, sigma, mask=ms)
        s = tl.sum(sigma * residues, axis=1) + skip * uf
    else:  # Hyena-SE / -MR: the FIR window over u
        s = pu + hu * uf
        _window_store(tail_ptr, tu, u, c, mc, D, K, KP)
        if KIND == 1:
            s += skip * uf
    y = q * s.to(dt).to(tl.float32)
    tl.store(y_ptr + b * D + c, y.to(dt), mask=mc)


def hyena_step_triton(z_BC, featurizer_tail_BFC, featurizer_FC, kind, filter_tail_BKD, filter_KD, sigma_BDS,
                      poles_DS, residues_DS, skip_D, block_d: int = 32) -> torch.Tensor:
    """Checked by `hyena_step`: state buffers and fp32 taps contiguous, tails of at least one row."""
    B, C = z_BC.shape
    D = C // 3
    y_BD = _empty(B, D, like=z_BC)
    F = featurizer_FC.shape[0]
    K = filter_KD.shape[0] if filter_KD is not None else 2
    S = poles_DS.shape[1] if poles_DS is not None else 1
    unused = featurizer_FC  # a valid pointer for the arguments this kind never reads
    pick = lambda t: unused if t is None else t  # noqa: E731
    # 4 warps share the (K-1, BD) window of an MR filter; one warp holds an SE/LR program's few values
    _hyena_step_kernel[(triton.cdiv(D, block_d), B)](
        z_BC, featurizer_tail_BFC, featurizer_FC, pick(filter_tail_BKD), pick(filter_KD), pick(sigma_BDS),
        pick(poles_DS), pick(residues_DS), pick(skip_D), y_BD, D, z_BC.stride(0),
        F=F, FP=triton.next_power_of_2(F - 1), K=K, KP=triton.next_power_of_2(max(K - 1, 1)),
        S=S, SP=triton.next_power_of_2(S), KIND=_KIND[kind], BD=block_d, num_warps=4 if K > 32 else 1)
    return y_BD
