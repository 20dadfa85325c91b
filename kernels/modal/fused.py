"""The fused Hyena-LR core in Triton, forward and backward, and `ModalHyenaFn`: y = q^ * (h * u + D u),
u = k^ v^, straight from the projected features z (B, L, 3D) (spec §2.4 steps 3-5, §2.7). The modal
recurrence and its three passes are triton.py's; here passes 1 and 3 build u (and q^) on the fly.

Legend: B batch, L length, D channels, C = 3D projection channels, S = 16 poles per channel, BD channel tile
(one channel a thread), N chunks of CH tokens, T tokens unrolled per loop step.

Featurizer: z^[t] = w0 z[t-2] + w1 z[t-1] + w2 z[t] on every projection channel, q^ = z^[3c], k^ = z^[3c+1],
v^ = z^[3c+2]. Each thread walks its channel's tokens in order, so the 3 taps are a rolling window of the
last 2 raw z rows in registers; the first tokens of a chunk load the 2 rows before it, which before the
sequence's start are the carried tail (the last 2 rows of the previous chunk, chunked prefill) or zeros.
  forward  pass 1 `_lr_state` (u from z) -> pass 2 `_chunk_scan` -> pass 3 `_lr_out` (y = q^ s at the store)
  backward states and tau again (pass 1 + 2), then
           `_lr_grad`:   s recomputed from the chunk states (S FMAs a token, cheaper than keeping an fp32
                         (B, L, D) s from the forward), dq^ = dy s, ds = dy q^, and the filter partials
                         dR += ds sigma, dlam += ds tau, dD += ds u (triton.py's `_chunk_grad` with ds)
           du = h (*) ds anti-causal + D ds: triton.py's reversed passes on ds
           `_lr_kv_grad`: dk^ = du v^, dv^ = du k^, written into d(z^) (B, L, 3D) beside dq^
           d(z^) through the featurizer: kernels/hyena's `_featurizer_bwd` (dz and the weight gradient); the
           weight gradient's terms that meet the carried tail are added on the host.
Memory beyond z and y: the (B, N, D, S) fp32 chunk states; the backward also holds ds, du (fp32) and d(z^).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import triton as mt
from .reference import modal_state_update_ref
from .triton import _bc, _conv, _ld16, _st16, _sum16


@triton.jit
def _zprev(zb_ptr, tail_ptr, b, pos, ch, dmask, C, HAS_TAIL: tl.constexpr):
    # raw z at token pos (a scalar, < L) of channels ch; before the start the carried tail (B, 2, C) or zero
    pv = ch * 0 + pos  # a vector mask: a scalar one fails in the interpreter
    x = tl.load(zb_ptr + pos.to(tl.int64) * C + ch, mask=dmask & (pv >= 0), other=0.0).to(tl.float32)
    if HAS_TAIL:
        x += tl.load(tail_ptr + (b * 2 + pos + 2).to(tl.int64) * C + ch, mask=dmask & (pv < 0), other=0.0
                     ).to(tl.float32)
    return x


@triton.jit
def _zld(zp, ch, m):
    return tl.load(zp + ch, mask=m, other=0.0).to(tl.float32)


@triton.jit
def _w3(w_ptr, ch, dmask):
    return (tl.load(w_ptr + ch * 3, mask=dmask, other=0.0), tl.load(w_ptr + ch * 3 + 1, mask=dmask, other=0.0),
            tl.load(w_ptr + ch * 3 + 2, mask=dmask, other=0.0))


@triton.jit
def _lr_state(z_ptr, tail_ptr, w_ptr, lam_ptr, sig_ptr, tau_ptr, L, D, N, HAS_TAIL: tl.constexpr,
              WITH_TAU: tl.constexpr, T: tl.constexpr, CH: tl.constexpr, BD: tl.constexpr):
    # triton.py's `_chunk_state` with u = k^ v^ built from z
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    C = 3 * D
    zb = z_ptr + (b * L).to(tl.int64) * C
    kc, vc = 3 * d + 1, 3 * d + 2
    kw0, kw1, kw2 = _w3(w_ptr, kc, dmask)
    vw0, vw1, vw2 = _w3(w_ptr, vc, dmask)
    p = tl.exp(_ld16(lam_ptr, d.to(tl.int64) * 16, dmask))
    sig = p * 0.0
    tau = p * 0.0
    pos0 = n * CH
    k2 = _zprev(zb, tail_ptr, b, pos0 - 2, kc, dmask, C, HAS_TAIL)
    k1 = _zprev(zb, tail_ptr, b, pos0 - 1, kc, dmask, C, HAS_TAIL)
    v2 = _zprev(zb, tail_ptr, b, pos0 - 2, vc, dmask, C, HAS_TAIL)
    v1 = _zprev(zb, tail_ptr, b, pos0 - 1, vc, dmask, C, HAS_TAIL)
    for tile in range(CH // T):
        for k in tl.static_range(T):
            zp = zb + (pos0 + tile * T + k).to(tl.int64) * C  # full chunks only: every token < L
            zk = _zld(zp, kc, dmask)
            zv = _zld(zp, vc, dmask)
            x = (kw0 * k2 + kw1 * k1 + kw2 * zk) * (vw0 * v2 + vw1 * v1 + vw2 * zv)
            k2, k1, v2, v1 = k1, zk, v1, zv
            if WITH_TAU:
                tau = p * (tau + sig)
            sig = p * sig + _bc(x)
    st = ((b * N + n) * D + d).to(tl.int64) * 16
    _st16(sig_ptr, st, dmask, sig)
    if WITH_TAU:
        _st16(tau_ptr, st, dmask, tau)


@triton.jit
def _lr_out(z_ptr, tail_ptr, w_ptr, y_ptr, lam_ptr, r_ptr, skip_ptr, sin_ptr, L, D, N,
            HAS_TAIL: tl.constexpr, T: tl.constexpr, CH: tl.constexpr, BD: tl.constexpr):
    # from sigma_in[n]: sigma <- p sigma + u[t], y[t] = q^[t] (R . sigma + D u[t])
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    C = 3 * D
    zb = z_ptr + (b * L).to(tl.int64) * C
    qc, kc, vc = 3 * d, 3 * d + 1, 3 * d + 2
    qw0, qw1, qw2 = _w3(w_ptr, qc, dmask)
    kw0, kw1, kw2 = _w3(w_ptr, kc, dmask)
    vw0, vw1, vw2 = _w3(w_ptr, vc, dmask)
    row = d.to(tl.int64) * 16
    p = tl.exp(_ld16(lam_ptr, row, dmask))
    r = _ld16(r_ptr, row, dmask)
    skip_D = tl.load(skip_ptr + d, mask=dmask, other=0.0)
    sig = _ld16(sin_ptr, ((b * N + n) * D + d).to(tl.int64) * 16, dmask)
    pos0 = n * CH
    q2 = _zprev(zb, tail_ptr, b, pos0 - 2, qc, dmask, C, HAS_TAIL)
    q1 = _zprev(zb, tail_ptr, b, pos0 - 1, qc, dmask, C, HAS_TAIL)
    k2 = _zprev(zb, tail_ptr, b, pos0 - 2, kc, dmask, C, HAS_TAIL)
    k1 = _zprev(zb, tail_ptr, b, pos0 - 1, kc, dmask, C, HAS_TAIL)
    v2 = _zprev(zb, tail_ptr, b, pos0 - 2, vc, dmask, C, HAS_TAIL)
    v1 = _zprev(zb, tail_ptr, b, pos0 - 1, vc, dmask, C, HAS_TAIL)
    zp = zb + pos0.to(tl.int64) * C  # token pos0 < L: the chunk exists
    nq, nk, nv = _zld(zp, qc, dmask), _zld(zp, kc, dmask), _zld(zp, vc, dmask)
    for tile in range(CH // T):
        for k in tl.static_range(T):
            # one token ahead: y's stores may alias z for all the compiler knows, so a load written after a
            # store is issued after it; the next token's rows load while this one computes
            pos = pos0 + tile * T + k
            m = dmask & (d * 0 + pos < L)
            zq, zk, zv = nq, nk, nv
            mn = dmask & (d * 0 + pos + 1 < L)
            zp = zb + (pos + 1).to(tl.int64) * C
            nq, nk, nv = _zld(zp, qc, mn), _zld(zp, kc, mn), _zld(zp, vc, mn)
            x = (kw0 * k2 + kw1 * k1 + kw2 * zk) * (vw0 * v2 + vw1 * v1 + vw2 * zv)
            q = qw0 * q2 + qw1 * q1 + qw2 * zq
            q2, q1, k2, k1, v2, v1 = q1, zq, k1, zk, v1, zv
            sig = p * sig + _bc(x)
            y = q * (_sum16(r * sig) + skip_D * x)
            tl.store(y_ptr + (b * L + pos).to(tl.int64) * D + d, y.to(y_ptr.dtype.element_ty), mask=m)


@triton.jit
def _lr_grad(z_ptr, tail_ptr, w_ptr, dy_ptr, lam_ptr, r_ptr, skip_ptr, sin_ptr, tin_ptr, dzf_ptr, ds_ptr,
             gr_ptr, gl_ptr, gd_ptr, L, D, N, HAS_TAIL: tl.constexpr, T: tl.constexpr, CH: tl.constexpr,
             BD: tl.constexpr):
    # one sweep over chunk n from its entering sigma and tau: dq^ = dy s into d(z^), ds = dy q^, and the
    # per-(batch, chunk) filter partials
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    C = 3 * D
    zb = z_ptr + (b * L).to(tl.int64) * C
    qc, kc, vc = 3 * d, 3 * d + 1, 3 * d + 2
    qw0, qw1, qw2 = _w3(w_ptr, qc, dmask)
    kw0, kw1, kw2 = _w3(w_ptr, kc, dmask)
    vw0, vw1, vw2 = _w3(w_ptr, vc, dmask)
    row = d.to(tl.int64) * 16
    p = tl.exp(_ld16(lam_ptr, row, dmask))
    r = _ld16(r_ptr, row, dmask)
    skip_D = tl.load(skip_ptr + d, mask=dmask, other=0.0)
    st = ((b * N + n) * D + d).to(tl.int64) * 16
    sig = _ld16(sin_ptr, st, dmask)
    tau = _ld16(tin_ptr, st, dmask)
    g_r = p * 0.0
    g_l = p * 0.0
    g_d = tl.zeros((BD,), tl.float32)
    pos0 = n * CH
    q2 = _zprev(zb, tail_ptr, b, pos0 - 2, qc, dmask, C, HAS_TAIL)
    q1 = _zprev(zb, tail_ptr, b, pos0 - 1, qc, dmask, C, HAS_TAIL)
    k2 = _zprev(zb, tail_ptr, b, pos0 - 2, kc, dmask, C, HAS_TAIL)
    k1 = _zprev(zb, tail_ptr, b, pos0 - 1, kc, dmask, C, HAS_TAIL)
    v2 = _zprev(zb, tail_ptr, b, pos0 - 2, vc, dmask, C, HAS_TAIL)
    v1 = _zprev(zb, tail_ptr, b, pos0 - 1, vc, dmask, C, HAS_TAIL)
    zr = (b * L + pos0).to(tl.int64) * C  # token pos0 < L: the chunk exists
    nq, nk, nv = _zld(z_ptr + zr, qc, dmask), _zld(z_ptr + zr, kc, dmask), _zld(z_ptr + zr, vc, dmask)
    ng = tl.load(dy_ptr + (b * L + pos0).to(tl.int64) * D + d, mask=dmask, other=0.0).to(tl.float32)
    for tile in range(CH // T):
        for k in tl.static_range(T):
            pos = pos0 + tile * T + k  # the next token's loads first, as in `_lr_out`
            m = dmask & (d * 0 + pos < L)
            o = (b * L + pos).to(tl.int64) * D + d
            zr = (b * L + pos).to(tl.int64) * C
            zq, zk, zv, g = nq, nk, nv, ng  # dy is zero past L: no partials there
            mn = dmask & (d * 0 + pos + 1 < L)
            zn = z_ptr + zr + C
            nq, nk, nv = _zld(zn, qc, mn), _zld(zn, kc, mn), _zld(zn, vc, mn)
            ng = tl.load(dy_ptr + o + D, mask=mn, other=0.0).to(tl.float32)
            x = (kw0 * k2 + kw1 * k1 + kw2 * zk) * (vw0 * v2 + vw1 * v1 + vw2 * zv)
            q = qw0 * q2 + qw1 * q1 + qw2 * zq
            q2, q1, k2, k1, v2, v1 = q1, zq, k1, zk, v1, zv
            tau = p * (tau + sig)  # d sigma / d lam, from the previous sigma
            sig = p * sig + _bc(x)
            s = _sum16(r * sig) + skip_D * x
            ds = g * q
            tl.store(dzf_ptr + zr + qc, (g * s).to(dzf_ptr.dtype.element_ty), mask=m)
            tl.store(ds_ptr + o, ds, mask=m)
            g_r += _bc(ds) * sig
            g_l += _bc(ds) * tau
            g_d += ds * x
    _st16(gr_ptr, st, dmask, g_r)
    _st16(gl_ptr, st, dmask, g_l)
    tl.store(gd_ptr + (b * N + n).to(tl.int64) * D + d, g_d, mask=dmask)


@triton.jit
def _lr_kv_grad(z_ptr, tail_ptr, w_ptr, du_ptr, dzf_ptr, L, D, HAS_TAIL: tl.constexpr, T: tl.constexpr,
                CH: tl.constexpr, BD: tl.constexpr):
    # the pre-gate's adjoint: dk^ = du v^, dv^ = du k^ (same walk as the passes above)
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    C = 3 * D
    zb = z_ptr + (b * L).to(tl.int64) * C
    kc, vc = 3 * d + 1, 3 * d + 2
    kw0, kw1, kw2 = _w3(w_ptr, kc, dmask)
    vw0, vw1, vw2 = _w3(w_ptr, vc, dmask)
    pos0 = n * CH
    k2 = _zprev(zb, tail_ptr, b, pos0 - 2, kc, dmask, C, HAS_TAIL)
    k1 = _zprev(zb, tail_ptr, b, pos0 - 1, kc, dmask, C, HAS_TAIL)
    v2 = _zprev(zb, tail_ptr, b, pos0 - 2, vc, dmask, C, HAS_TAIL)
    v1 = _zprev(zb, tail_ptr, b, pos0 - 1, vc, dmask, C, HAS_TAIL)
    for tile in range(CH // T):
        for k in tl.static_range(T):
            pos = pos0 + tile * T + k
            m = dmask & (d * 0 + pos < L)
            zr = (b * L + pos).to(tl.int64) * C
            zp = z_ptr + zr
            zk = _zld(zp, kc, m)
            zv = _zld(zp, vc, m)
            kh = kw0 * k2 + kw1 * k1 + kw2 * zk
            vh = vw0 * v2 + vw1 * v1 + vw2 * zv
            k2, k1, v2, v1 = k1, zk, v1, zv
            du = tl.load(du_ptr + (b * L + pos).to(tl.int64) * D + d, mask=m, other=0.0)
            out = dzf_ptr + zr
            tl.store(out + kc, (du * vh).to(dzf_ptr.dtype.element_ty), mask=m)
            tl.store(out + vc, (du * kh).to(dzf_ptr.dtype.element_ty), mask=m)


def _states(z_BLC, tail, w_CF, lam_DS, sigma0_BDS, with_tau, cfg):
    B, L, C = z_BLC.shape
    D = C // 3

    def pass1(grid, s_st, t_st, n_states):
        _lr_state[grid](z_BLC, tail if tail is not None else z_BLC, w_CF, lam_DS, s_st, t_st, L, D, n_states,
                        HAS_TAIL=tail is not None, WITH_TAU=with_tau, T=cfg["T"], CH=cfg["CH"], BD=cfg["BD"],
                        num_warps=cfg["num_warps"])
    return mt.carried_states(z_BLC, B, L, D, lam_DS, sigma0_BDS, with_tau, cfg, pass1)


def _u_rows(z_BLC, tail, w_CF, start):
    """u = k^ v^ (fp32, as the kernels compute it) at tokens start .. L-1, on a window that starts 2 rows
    earlier (the tail, or zeros, before the sequence)."""
    from ..fir.reference import fir_ref

    B, L, C = z_BLC.shape
    pad = tail if tail is not None else z_BLC.new_zeros(B, 2, C)
    win = z_BLC[:, start - 2:] if start >= 2 else torch.cat([pad[:, start:].to(z_BLC.dtype), z_BLC], 1)
    zf = fir_ref(win.float(), w_CF)[:, 2:]
    return zf[..., 1::3] * zf[..., 2::3]


class ModalHyenaFn(torch.autograd.Function):
    """(z, featurizer w, log_poles, residues, D, sigma0, z_tail) -> (y in z's dtype, sigma after z). w, lam,
    R, D fp32; sigma0 (B, D, S) and z_tail (B, 2, 3D) are constants for autograd (inference state), as is the
    returned state; gradients flow to z, w, log_poles, residues and D."""

    @staticmethod
    def forward(ctx, z_BLC, w_CF, lam_DS, R_DS, skip_D, sigma0_BDS, tail_B2C, cfg):
        z_BLC = z_BLC.contiguous()
        tail = tail_B2C.contiguous() if tail_B2C is not None else None
        B, L, C = z_BLC.shape
        D = C // 3
        sig_in, _ = _states(z_BLC, tail, w_CF, lam_DS, sigma0_BDS, False, cfg)
        N = sig_in.shape[1]
        y_BLD = mt._empty(z_BLC, B, L, D, dtype=z_BLC.dtype)
        _lr_out[(N, triton.cdiv(D, cfg["BD"]), B)](
            z_BLC, tail if tail is not None else z_BLC, w_CF, y_BLD, lam_DS, R_DS, skip_D, sig_in, L, D, N,
            HAS_TAIL=tail is not None, T=cfg["T"], CH=cfg["CH"], BD=cfg["BD"], num_warps=cfg["num_warps"])
        # the exact state after z: the carry into the last (possibly partial) chunk, then its own tokens
        start = (N - 1) * cfg["CH"]
        with torch.no_grad():
            sigma_out = modal_state_update_ref(sig_in[:, -1], _u_rows(z_BLC, tail, w_CF, start), lam_DS)
        ctx.save_for_backward(z_BLC, w_CF, lam_DS, R_DS, skip_D, sigma0_BDS, tail)
        ctx.cfg = cfg
        ctx.mark_non_differentiable(sigma_out)
        return y_BLD, sigma_out

    @staticmethod
    def backward(ctx, dy_BLD, _dsigma):
        from ..hyena.triton import _featurizer_bwd

        z_BLC, w_CF, lam, R, skip, sigma0_BDS, tail = ctx.saved_tensors
        cfg = ctx.cfg
        B, L, C = z_BLC.shape
        D = C // 3
        sig_in, tau_in = _states(z_BLC, tail, w_CF, lam, sigma0_BDS, True, cfg)
        N = sig_in.shape[1]
        grid = (N, triton.cdiv(D, cfg["BD"]), B)
        tail_arg = tail if tail is not None else z_BLC
        dzf_BLC = mt._empty(z_BLC, B, L, C, dtype=z_BLC.dtype)
        ds_BLD = mt._empty(z_BLC, B, L, D)
        g_r, g_l = mt._empty(sig_in, *sig_in.shape), mt._empty(sig_in, *sig_in.shape)
        g_d = mt._empty(z_BLC, B, N, D)
        tiling = dict(T=cfg["T"], CH=cfg["CH"], BD=cfg["BD"], num_warps=cfg["num_warps"])
        _lr_grad[grid](z_BLC, tail_arg, w_CF, dy_BLD.contiguous(), lam, R, skip, sig_in, tau_in, dzf_BLC, ds_BLD,
                       g_r, g_l, g_d, L, D, N, HAS_TAIL=tail is not None, **tiling)
        du_BLD = _conv(ds_BLD, lam, R, skip, None, True, cfg)[0]
        _lr_kv_grad[grid](z_BLC, tail_arg, w_CF, du_BLD, dzf_BLC, L, D, HAS_TAIL=tail is not None, **tiling)
        dz_BLC, dw_CF = _featurizer_bwd(z_BLC, w_CF, dzf_BLC)
        if tail is not None:  # dw[c, i] = sum_t dz^[t] z[t - 2 + i]: the rows before the start are the tail's
            g_B2C, t_B2C = dzf_BLC[:, :2].float(), tail.float()
            extra = torch.stack([(g_B2C[:, :min(2, L)] * t_B2C[:, :min(2, L)]).sum((0, 1)),
                                 (g_B2C[:, :1] * t_B2C[:, 1:]).sum((0, 1)), torch.zeros_like(dw_CF[:, 0])], 1)
            dw_CF = dw_CF + extra
        return dz_BLC, dw_CF, R * g_l.sum((0, 1)), g_r.sum((0, 1)), g_d.sum((0, 1)), None, None, None


def modal_hyena_triton(z_BLC, featurizer_CF, log_poles_DS, residues_DS, D_D, sigma_BDS=None, z_tail_B2C=None,
                       cfg=None):
    """Casts the parameters to fp32 outside the Function, so autograd casts their gradients back."""
    return ModalHyenaFn.apply(z_BLC, featurizer_CF.float().contiguous(), log_poles_DS.float().contiguous(),
                              residues_DS.float().contiguous(), D_D.float().contiguous(),
                              sigma_BDS.float().contiguous() if sigma_BDS is not None else None, z_tail_B2C,
                              dict(cfg or mt.CONFIG))
