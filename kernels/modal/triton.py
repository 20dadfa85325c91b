"""Triton kernels for the Hyena-LR long convolution as a chunked modal recurrence, forward and backward, and
`ModalConvFn`. The maths is chunked.py's; the filter is never materialised.

Legend: B batch, L length, D channels, S = 16 poles per channel, BD channel tile (one channel a thread), N
chunks of CH tokens, T tokens unrolled per loop step (CH a multiple of T and of 8).

The filter is per channel (not grouped), so no tensor-core operand is shared across channels. Measured on
the H200, Toeplitz tiles as (T, T, BD) and (T, BD, S) register products (the first version of this file)
were slower than the plain recurrence, which needs the least arithmetic of any form (2S FMAs per token and
channel for the output). So each thread runs the recurrence of its own channel, token by token, its 16
states in registers (see `_j16`), with T tokens unrolled so their loads are issued ahead of the dependent
FMAs (`_chunk_out` stores as it goes, so it loads the next 8 tokens before the current 8 are stored: the
compiler may not move a load past a store to another pointer). Three passes give parallelism over chunks
(one sweep over 1M tokens would be latency bound):
  1 `_chunk_state`  s[n] = the state after chunk n from a zero start (and tau, below), every full chunk
  2 `_chunk_scan`   sigma_in[n+1] = p^CH sigma_in[n] + s[n]: the 16-state carry, sequential over chunks
  3 `_chunk_out`    sigma <- p sigma + u[t],  y[t] = sum_s R_s sigma_s + D u[t], from sigma_in[n]
REVERSE runs the same passes on the time-reversed sequence: du = h (*) dy (anti-causal) + D dy.
Backward for the filter (the adjoint, with the chunk states recomputed, never stored by the forward):
  tau = d sigma / d lam:  tau[t] = p (tau[t-1] + sigma[t-1]),  tau_in[n+1] = p^CH (tau_in[n] + CH sigma_in[n])
                                                                              + tau[n] (from zero)
  dR_s = sum_t dy[t] sigma_s[t],   dlam_s = R_s sum_t dy[t] tau_s[t],   dD = sum_t dy[t] u[t]
as per-(chunk, batch) partials summed on the host (no atomics). Memory: the (B, N, D, S) chunk states,
S * 4 / CH bytes per token and channel (1/8 of a bf16 activation at CH = 256).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _row(n, tile, k, b, d, dmask, L, D, REVERSE: tl.constexpr, T: tl.constexpr, CH: tl.constexpr):
    # offsets and mask of token k of tile `tile` of chunk n (BD channels); REVERSE walks the reversed sequence
    pos = n * CH + tile * T + k
    tok = (L - 1 - pos) if REVERSE else pos
    return (b * L + tok).to(tl.int64) * D + d, dmask & (d * 0 + pos < L)


# The 16 modal states of a channel live in one thread: a state tile is (BD, 2, 2, 2, 2), built by joins
# (each join adds an in-thread axis), entry [d, i, j, k, l] = state s = i + 2j + 4k + 8l. So the recurrence
# and the sum over states are in-thread register arithmetic: no shuffles, no shared memory (a (BD, S) tile
# let the compiler spread S over lanes: 6x the instructions, measured on the sm_90 SASS).
@triton.jit
def _j16(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15):
    b0, b1, b2, b3 = tl.join(a0, a1), tl.join(a2, a3), tl.join(a4, a5), tl.join(a6, a7)
    b4, b5, b6, b7 = tl.join(a8, a9), tl.join(a10, a11), tl.join(a12, a13), tl.join(a14, a15)
    return tl.join(tl.join(tl.join(b0, b1), tl.join(b2, b3)), tl.join(tl.join(b4, b5), tl.join(b6, b7)))


@triton.jit
def _ld16(ptr, row, m):
    # ptr[row + s], s < 16, as a state tile; row: (BD,) int64 offsets of state 0
    return _j16(tl.load(ptr + row, mask=m, other=0.0), tl.load(ptr + row + 1, mask=m, other=0.0),
                tl.load(ptr + row + 2, mask=m, other=0.0), tl.load(ptr + row + 3, mask=m, other=0.0),
                tl.load(ptr + row + 4, mask=m, other=0.0), tl.load(ptr + row + 5, mask=m, other=0.0),
                tl.load(ptr + row + 6, mask=m, other=0.0), tl.load(ptr + row + 7, mask=m, other=0.0),
                tl.load(ptr + row + 8, mask=m, other=0.0), tl.load(ptr + row + 9, mask=m, other=0.0),
                tl.load(ptr + row + 10, mask=m, other=0.0), tl.load(ptr + row + 11, mask=m, other=0.0),
                tl.load(ptr + row + 12, mask=m, other=0.0), tl.load(ptr + row + 13, mask=m, other=0.0),
                tl.load(ptr + row + 14, mask=m, other=0.0), tl.load(ptr + row + 15, mask=m, other=0.0))


@triton.jit
def _st2(ptr, row, m, t):
    a, b = tl.split(t)  # the last axis halves s (its bit of weight 1 here: i)
    tl.store(ptr + row, a, mask=m)
    tl.store(ptr + row + 1, b, mask=m)


@triton.jit
def _st4(ptr, row, m, t):
    a, b = tl.split(t)
    _st2(ptr, row, m, a)
    _st2(ptr, row + 2, m, b)


@triton.jit
def _st8(ptr, row, m, t):
    a, b = tl.split(t)
    _st4(ptr, row, m, a)
    _st4(ptr, row + 4, m, b)


@triton.jit
def _st16(ptr, row, m, t):
    # the inverse of _ld16: split the outermost join (l) first
    a, b = tl.split(t)
    _st8(ptr, row, m, a)
    _st8(ptr, row + 8, m, b)


@triton.jit
def _bc(x):
    return x[:, None, None, None, None]


@triton.jit
def _sum16(t):
    return tl.sum(tl.sum(tl.sum(tl.sum(t, axis=4), axis=3), axis=2), axis=1)


@triton.jit
def _chunk_state(u_ptr, lam_ptr, sig_ptr, tau_ptr, L, D, N, REVERSE: tl.constexpr, WITH_TAU: tl.constexpr,
                 T: tl.constexpr, CH: tl.constexpr, BD: tl.constexpr):
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    p = tl.exp(_ld16(lam_ptr, d.to(tl.int64) * 16, dmask))
    sig = p * 0.0
    tau = p * 0.0
    for tile in range(CH // T):
        for k in tl.static_range(T):  # unrolled: the T loads are independent of the recurrence
            offs, m = _row(n, tile, k, b, d, dmask, L, D, REVERSE, T, CH)
            x = tl.load(u_ptr + offs, mask=m, other=0.0).to(tl.float32)
            if WITH_TAU:
                tau = p * (tau + sig)
            sig = p * sig + _bc(x)
    st = ((b * N + n) * D + d).to(tl.int64) * 16
    _st16(sig_ptr, st, dmask, sig)
    if WITH_TAU:
        _st16(tau_ptr, st, dmask, tau)


@triton.jit
def _chunk_scan(s_ptr, t_ptr, sig0_ptr, pC_ptr, sin_ptr, tin_ptr, DS, N_STATES, N,
                HAS_SIG0: tl.constexpr, WITH_TAU: tl.constexpr, CH: tl.constexpr, BLOCK: tl.constexpr,
                U: tl.constexpr):
    b = tl.program_id(1)
    e = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = e < DS
    pC = tl.load(pC_ptr + e, mask=m, other=0.0)
    if HAS_SIG0:
        sig = tl.load(sig0_ptr + b * DS + e, mask=m, other=0.0)
    else:
        sig = tl.zeros((BLOCK,), tl.float32)
    tau = tl.zeros((BLOCK,), tl.float32)
    for n0 in range(0, N, U):
        for k in tl.static_range(U):  # unrolled: the chunk-state loads do not wait for the carry
            n = n0 + k
            o = (b * N + n).to(tl.int64) * DS + e
            mo = m & (e * 0 + n < N)
            tl.store(sin_ptr + o, sig, mask=mo)
            if WITH_TAU:
                tl.store(tin_ptr + o, tau, mask=mo)
            mn = m & (e * 0 + n < N_STATES)  # the last chunk's own state is never needed
            i = (b * N_STATES + n).to(tl.int64) * DS + e
            if WITH_TAU:
                tau = pC * tau + CH * pC * sig + tl.load(t_ptr + i, mask=mn, other=0.0)
            sig = pC * sig + tl.load(s_ptr + i, mask=mn, other=0.0)


@triton.jit
def _out_step(sig, x, p, r, skip_D, y_ptr, offs, m):
    sig = p * sig + _bc(x)
    tl.store(y_ptr + offs, _sum16(r * sig) + skip_D * x, mask=m)
    return sig


@triton.jit
def _load8(u_ptr, n, tile, b, d, dmask, L, D, REVERSE: tl.constexpr, CH: tl.constexpr):
    o0, m0 = _row(n, tile, 0, b, d, dmask, L, D, REVERSE, 8, CH)
    o1, m1 = _row(n, tile, 1, b, d, dmask, L, D, REVERSE, 8, CH)
    o2, m2 = _row(n, tile, 2, b, d, dmask, L, D, REVERSE, 8, CH)
    o3, m3 = _row(n, tile, 3, b, d, dmask, L, D, REVERSE, 8, CH)
    o4, m4 = _row(n, tile, 4, b, d, dmask, L, D, REVERSE, 8, CH)
    o5, m5 = _row(n, tile, 5, b, d, dmask, L, D, REVERSE, 8, CH)
    o6, m6 = _row(n, tile, 6, b, d, dmask, L, D, REVERSE, 8, CH)
    o7, m7 = _row(n, tile, 7, b, d, dmask, L, D, REVERSE, 8, CH)
    return (tl.load(u_ptr + o0, mask=m0, other=0.0).to(tl.float32),
            tl.load(u_ptr + o1, mask=m1, other=0.0).to(tl.float32),
            tl.load(u_ptr + o2, mask=m2, other=0.0).to(tl.float32),
            tl.load(u_ptr + o3, mask=m3, other=0.0).to(tl.float32),
            tl.load(u_ptr + o4, mask=m4, other=0.0).to(tl.float32),
            tl.load(u_ptr + o5, mask=m5, other=0.0).to(tl.float32),
            tl.load(u_ptr + o6, mask=m6, other=0.0).to(tl.float32),
            tl.load(u_ptr + o7, mask=m7, other=0.0).to(tl.float32))


@triton.jit
def _chunk_out(u_ptr, y_ptr, lam_ptr, r_ptr, skip_ptr, sin_ptr, L, D, N, REVERSE: tl.constexpr,
               CH: tl.constexpr, BD: tl.constexpr):
    # 8 tokens per step, written out: y's stores may alias u's loads for all the compiler knows, so the
    # loads of the next 8 tokens are issued (in program order) before this step's stores
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    row = d.to(tl.int64) * 16
    p = tl.exp(_ld16(lam_ptr, row, dmask))
    r = _ld16(r_ptr, row, dmask)
    skip_D = tl.load(skip_ptr + d, mask=dmask, other=0.0)
    sig = _ld16(sin_ptr, ((b * N + n) * D + d).to(tl.int64) * 16, dmask)
    x0, x1, x2, x3, x4, x5, x6, x7 = _load8(u_ptr, n, 0, b, d, dmask, L, D, REVERSE, CH)
    for tile in range(CH // 8):
        nx0, nx1, nx2, nx3, nx4, nx5, nx6, nx7 = _load8(u_ptr, n, tile + 1, b, d, dmask, L, D, REVERSE, CH)
        o, m = _row(n, tile, 0, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x0, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 1, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x1, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 2, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x2, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 3, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x3, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 4, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x4, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 5, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x5, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 6, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x6, p, r, skip_D, y_ptr, o, m)
        o, m = _row(n, tile, 7, b, d, dmask, L, D, REVERSE, 8, CH)
        sig = _out_step(sig, x7, p, r, skip_D, y_ptr, o, m)
        x0, x1, x2, x3, x4, x5, x6, x7 = nx0, nx1, nx2, nx3, nx4, nx5, nx6, nx7


@triton.jit
def _chunk_grad(u_ptr, dy_ptr, lam_ptr, sin_ptr, tin_ptr, gr_ptr, gl_ptr, gd_ptr, L, D, N,
                T: tl.constexpr, CH: tl.constexpr, BD: tl.constexpr):
    n, b = tl.program_id(0), tl.program_id(2)
    d = tl.program_id(1) * BD + tl.arange(0, BD)
    dmask = d < D
    p = tl.exp(_ld16(lam_ptr, d.to(tl.int64) * 16, dmask))
    st = ((b * N + n) * D + d).to(tl.int64) * 16
    sig = _ld16(sin_ptr, st, dmask)
    tau = _ld16(tin_ptr, st, dmask)
    g_r = p * 0.0
    g_l = p * 0.0
    g_d = tl.zeros((BD,), tl.float32)
    for tile in range(CH // T):
        for k in tl.static_range(T):
            offs, m = _row(n, tile, k, b, d, dmask, L, D, False, T, CH)
            x = tl.load(u_ptr + offs, mask=m, other=0.0).to(tl.float32)
            g = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32)
            tau = p * (tau + sig)  # d sigma / d lam, from the previous sigma
            sig = p * sig + _bc(x)
            g_r += _bc(g) * sig
            g_l += _bc(g) * tau
            g_d += g * x
    _st16(gr_ptr, st, dmask, g_r)
    _st16(gl_ptr, st, dmask, g_l)
    tl.store(gd_ptr + (b * N + n).to(tl.int64) * D + d, g_d, mask=dmask)


# T: tokens unrolled per step in _chunk_state / _chunk_grad (_chunk_out always takes 8); CH a multiple of 8
CONFIG = {"T": 8, "CH": 256, "BD": 128, "num_warps": 4}  # BD = 32 num_warps: one channel a thread
POISON = False  # tests set it: every kernel output starts as NaN, so unwritten memory fails loudly


def _empty(like, *shape, dtype=torch.float32):
    out = like.new_empty(*shape, dtype=dtype)
    return out.fill_(float("nan")) if POISON else out


def _chunk_states(x_BLD, lam_DS, sigma0_BDS, reverse, with_tau, cfg):
    """Passes 1-2: the state (and tau) entering every chunk, (B, N, D, S) fp32 each."""
    B, L, D = x_BLD.shape

    def pass1(grid, s_st, t_st, n_states):
        _chunk_state[grid](x_BLD, lam_DS, s_st, t_st, L, D, n_states, REVERSE=reverse, WITH_TAU=with_tau,
                           T=cfg["T"], CH=cfg["CH"], BD=cfg["BD"], num_warps=cfg["num_warps"])
    return carried_states(x_BLD, B, L, D, lam_DS, sigma0_BDS, with_tau, cfg, pass1)


def carried_states(like, B, L, D, lam_DS, sigma0_BDS, with_tau, cfg, pass1):
    """Pass 1 (`pass1(grid, s, tau, n_states)` launches a `_chunk_state`-like kernel: the fused Hyena-LR op
    computes u from z in its own) then pass 2: the state (and tau) entering every chunk, (B, N, D, S) fp32."""
    S, CH, BD = lam_DS.shape[1], cfg["CH"], cfg["BD"]
    pC_DS = torch.exp(CH * lam_DS)
    N = triton.cdiv(L, CH)
    n_states = N - 1
    s_st = _empty(like, B, max(n_states, 1), D, S)
    t_st = _empty(like, B, max(n_states, 1), D, S) if with_tau else s_st
    if n_states > 0:
        pass1((n_states, triton.cdiv(D, BD), B), s_st, t_st, n_states)
    sig_in = _empty(like, B, N, D, S)
    tau_in = _empty(like, B, N, D, S) if with_tau else sig_in
    sig0 = sigma0_BDS.float().contiguous() if sigma0_BDS is not None else pC_DS  # (unread if None)
    BLOCK = 256
    _chunk_scan[(triton.cdiv(D * S, BLOCK), B)](
        s_st, t_st, sig0, pC_DS, sig_in, tau_in, D * S, n_states, N, HAS_SIG0=sigma0_BDS is not None,
        WITH_TAU=with_tau, CH=CH, BLOCK=BLOCK, U=8)
    return sig_in, tau_in


def _conv(x_BLD, lam_DS, R_DS, skip_D, sigma0_BDS, reverse, cfg, out_dtype=torch.float32):
    B, L, D = x_BLD.shape
    sig_in, _ = _chunk_states(x_BLD, lam_DS, sigma0_BDS, reverse, False, cfg)
    y_BLD = _empty(x_BLD, B, L, D, dtype=out_dtype)  # the store rounds the fp32 result once
    _chunk_out[(sig_in.shape[1], triton.cdiv(D, cfg["BD"]), B)](
        x_BLD, y_BLD, lam_DS, R_DS, skip_D, sig_in, L, D, sig_in.shape[1], REVERSE=reverse,
        CH=cfg["CH"], BD=cfg["BD"], num_warps=cfg["num_warps"])
    return y_BLD, sig_in


class ModalConvFn(torch.autograd.Function):
    """(u, log_poles, residues, D, sigma0) -> (y fp32, sigma after u). sigma0 and the returned state are
    constants for autograd (inference state); gradients flow to u, log_poles, residues and D."""

    @staticmethod
    def forward(ctx, u_BLD, lam_DS, R_DS, skip_D, sigma0_BDS, cfg):
        from .reference import modal_state_update_ref
        u_BLD = u_BLD.contiguous()
        lam, R, skip = lam_DS.float().contiguous(), R_DS.float().contiguous(), skip_D.float().contiguous()
        y_BLD, sig_in = _conv(u_BLD, lam, R, skip, sigma0_BDS, False, cfg)
        # the exact state after u: carry into the last (possibly partial) chunk, then its own tokens
        sigma_out = modal_state_update_ref(sig_in[:, -1], u_BLD[:, (sig_in.shape[1] - 1) * cfg["CH"]:], lam)
        ctx.save_for_backward(u_BLD, lam, R, skip, sigma0_BDS)
        ctx.cfg, ctx.dtypes = cfg, (u_BLD.dtype, lam_DS.dtype, R_DS.dtype, skip_D.dtype)
        ctx.mark_non_differentiable(sigma_out)
        return y_BLD, sigma_out

    @staticmethod
    def backward(ctx, dy_BLD, _dsigma):
        u_BLD, lam, R, skip, sigma0_BDS = ctx.saved_tensors
        cfg = ctx.cfg
        B, L, D = u_BLD.shape
        dy_BLD = dy_BLD.float().contiguous()
        du_dt, lam_dt, r_dt, d_dt = ctx.dtypes
        du_BLD = _conv(dy_BLD, lam, R, skip, None, True, cfg, du_dt)[0] if ctx.needs_input_grad[0] else None
        sig_in, tau_in = _chunk_states(u_BLD, lam, sigma0_BDS, False, True, cfg)
        N = sig_in.shape[1]
        g_r, g_l = _empty(sig_in, *sig_in.shape), _empty(sig_in, *sig_in.shape)
        g_d = _empty(u_BLD, B, N, D)
        _chunk_grad[(N, triton.cdiv(D, cfg["BD"]), B)](
            u_BLD, dy_BLD, lam, sig_in, tau_in, g_r, g_l, g_d, L, D, N, T=cfg["T"], CH=cfg["CH"],
            BD=cfg["BD"], num_warps=cfg["num_warps"])
        return (du_BLD, (R * g_l.sum((0, 1))).to(lam_dt), g_r.sum((0, 1)).to(r_dt),
                g_d.sum((0, 1)).to(d_dt), None, None)


def modal_conv_triton(u_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS=None, cfg=None):
    return ModalConvFn.apply(u_BLD, log_poles_DS, residues_DS, D_D, sigma_BDS, dict(cfg or CONFIG))
