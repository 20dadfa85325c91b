"""Triton kernels for the fused Hyena-SE core (filters of at most 7 taps), forward and backward in one pass
each, and `SEConvFn`.

Legend: B batch, L length, D channels, C = 3D projection channels, G filter groups, GS = D / G channels per
group, K filter length (<= 7), BD channels per program (one per thread), SEG positions per program.

For 7 taps the convolution is 7 FMAs per output: far too little work for tensor cores (the Toeplitz form of
triton.py runs at 14x the memory floor here), so this is a direct, register-resident form. Each thread owns one
channel and walks its segment's positions in order, keeping every window the recurrences need in registers:
the last 2 raw q/k/v inputs (3-tap featurizer), the last 6 pre-gated u (the filter), and in the backward the
last 8 raw k/v, 6 ds and 2 dq/dk/dv. z is read once and y (forward) or dz (backward) written once, so the
traffic is the memory floor (plus 8 or 16 warm-up/look-ahead rows per segment). Four positions are unrolled
per loop step and their loads issued before any store (the compiler does not move a load past a store).
Any group size works: each channel gathers its group's filter once.

With hc[j] = h[K-1-j] (convolution order, hc[0] meets the current sample) and the featurizer w (last tap on
the current sample):
    forward    q^, k^, v^ = w * z,  u = k^ v^,  s[t] = sum_j hc[j] u[t-j],  y = q^ s
    backward   ds = dy q^,  dq^ = dy s,  du[t] = sum_j hc[j] ds[t+j],  dk^ = du v^,  dv^ = du k^,
               dz[t] = sum_i w[i] dz^[t+2-i],  dhc[j] = sum_t ds[t] u[t-j],  dw[i] = sum_t dz^[t] z[t-2+i]
At step t the backward has ds up to t, so it finishes du, dk^, dv^ of row t-6 and dz of k, v at row t-8, and
dz of q at row t-2. Filter and featurizer gradients are per-program, per-channel partials summed on the host.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton import _empty  # NaN-poisoned under the tests' POISON switch

MAX_TAPS = 7
UNROLL = 4  # positions per loop step; a divisor of the 8 warm-up rows


@triton.jit
def _w3(w_ptr, c, mc, WHICH: tl.constexpr):
    row = (3 * c + WHICH) * 3
    return (tl.load(w_ptr + row, mask=mc, other=0.0), tl.load(w_ptr + row + 1, mask=mc, other=0.0),
            tl.load(w_ptr + row + 2, mask=mc, other=0.0))


@triton.jit
def _tap(h_ptr, g, mc, j: tl.constexpr, K: tl.constexpr):
    # hc[j] = h[g, K-1-j]; zero past the filter
    if j < K:
        return tl.load(h_ptr + g * K + (K - 1 - j), mask=mc, other=0.0)
    else:
        return tl.zeros(g.shape, tl.float32)


@triton.jit
def _taps(h_ptr, c, mc, GS, K: tl.constexpr):
    g = c // GS
    return (_tap(h_ptr, g, mc, 0, K), _tap(h_ptr, g, mc, 1, K), _tap(h_ptr, g, mc, 2, K),
            _tap(h_ptr, g, mc, 3, K), _tap(h_ptr, g, mc, 4, K), _tap(h_ptr, g, mc, 5, K),
            _tap(h_ptr, g, mc, 6, K))


@triton.jit
def _ld(z_ptr, t, c3, mc, L, C):
    # raw q, k, v inputs of row t (zero outside [0, L))
    m = mc & (t >= 0) & (t < L)
    p = z_ptr + t * C + c3
    return (tl.load(p, mask=m, other=0.0).to(tl.float32), tl.load(p + 1, mask=m, other=0.0).to(tl.float32),
            tl.load(p + 2, mask=m, other=0.0).to(tl.float32))


@triton.jit
def _ld_bwd(z_ptr, dy_ptr, t, c, c3, mc, L, C, D):
    zq, zk, zv = _ld(z_ptr, t, c3, mc, L, C)
    g = tl.load(dy_ptr + t * D + c, mask=mc & (t >= 0) & (t < L), other=0.0).to(tl.float32)
    return zq, zk, zv, g


@triton.jit
def _fwd_row(x, win, wq, wk, wv, hc, y_ptr, t, t0, t1, c, mc, D):
    zq, zk, zv = x
    zq1, zq2, zk1, zk2, zv1, zv2, u1, u2, u3, u4, u5, u6 = win
    q = wq[0] * zq2 + wq[1] * zq1 + wq[2] * zq
    u = (wk[0] * zk2 + wk[1] * zk1 + wk[2] * zk) * (wv[0] * zv2 + wv[1] * zv1 + wv[2] * zv)
    s = hc[0] * u + hc[1] * u1 + hc[2] * u2 + hc[3] * u3 + hc[4] * u4 + hc[5] * u5 + hc[6] * u6
    tl.store(y_ptr + t * D + c, (q * s).to(y_ptr.dtype.element_ty), mask=mc & (t >= t0) & (t < t1))
    return zq, zq1, zk, zk1, zv, zv1, u, u1, u2, u3, u4, u5


@triton.jit
def _se_fwd_kernel(z_ptr, w_ptr, h_ptr, y_ptr, L, C, D, GS, SEG, K: tl.constexpr, BD: tl.constexpr):
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    z_ptr += pid_b.to(tl.int64) * L * C
    y_ptr += pid_b.to(tl.int64) * L * D
    c = pid_c * BD + tl.arange(0, BD)
    mc = c < D
    c3 = 3 * c
    wq, wk, wv = _w3(w_ptr, c, mc, 0), _w3(w_ptr, c, mc, 1), _w3(w_ptr, c, mc, 2)
    hc = _taps(h_ptr, c, mc, GS, K)
    t0 = pid_s * SEG
    t1 = tl.minimum(t0 + SEG, L)
    zq1 = tl.zeros((BD,), tl.float32)
    zq2, zk1, zk2, zv1, zv2, u1, u2, u3, u4, u5, u6 = zq1, zq1, zq1, zq1, zq1, zq1, zq1, zq1, zq1, zq1, zq1
    # 8 warm-up rows: u[t0 - 6] needs z from t0 - 8
    for t_first in range(t0 - 8, t1, 4):
        t = t_first + tl.zeros((BD,), tl.int32)  # positions as a vector: every mask is then elementwise
        xa = _ld(z_ptr, t, c3, mc, L, C)
        xb = _ld(z_ptr, t + 1, c3, mc, L, C)
        xc = _ld(z_ptr, t + 2, c3, mc, L, C)
        xd = _ld(z_ptr, t + 3, c3, mc, L, C)
        win = (zq1, zq2, zk1, zk2, zv1, zv2, u1, u2, u3, u4, u5, u6)
        win = _fwd_row(xa, win, wq, wk, wv, hc, y_ptr, t, t0, t1, c, mc, D)
        win = _fwd_row(xb, win, wq, wk, wv, hc, y_ptr, t + 1, t0, t1, c, mc, D)
        win = _fwd_row(xc, win, wq, wk, wv, hc, y_ptr, t + 2, t0, t1, c, mc, D)
        zq1, zq2, zk1, zk2, zv1, zv2, u1, u2, u3, u4, u5, u6 = _fwd_row(
            xd, win, wq, wk, wv, hc, y_ptr, t + 3, t0, t1, c, mc, D)


@triton.jit
def _bwd_row(x, st, acc, wq, wk, wv, hc, dz_ptr, t, t0, t1, c3, mc, C):
    zq, zk, zv, g = x
    (zq1, zq2, zk1, zk2, zk3, zk4, zk5, zk6, zk7, zk8, zv1, zv2, zv3, zv4, zv5, zv6, zv7, zv8,
     u1, u2, u3, u4, u5, u6, ds1, ds2, ds3, ds4, ds5, ds6, dq1, dq2, dk1, dk2, dv1, dv2) = st
    (dh0, dh1, dh2, dh3, dh4, dh5, dh6, dwq0, dwq1, dwq2, dwk0, dwk1, dwk2, dwv0, dwv1, dwv2) = acc
    # row t: recompute the forward, then ds and dq^
    q = wq[0] * zq2 + wq[1] * zq1 + wq[2] * zq
    u = (wk[0] * zk2 + wk[1] * zk1 + wk[2] * zk) * (wv[0] * zv2 + wv[1] * zv1 + wv[2] * zv)
    s = hc[0] * u + hc[1] * u1 + hc[2] * u2 + hc[3] * u3 + hc[4] * u4 + hc[5] * u5 + hc[6] * u6
    ds = g * q
    dq = g * s
    own = (t >= t0) & (t < t1)  # rows of this segment count in the partial sums; warm-up/look-ahead do not
    ds_own = tl.where(own, ds, 0.0)
    dq_own = tl.where(own, dq, 0.0)
    dh0 += ds_own * u
    dh1 += ds_own * u1
    dh2 += ds_own * u2
    dh3 += ds_own * u3
    dh4 += ds_own * u4
    dh5 += ds_own * u5
    dh6 += ds_own * u6
    dwq0 += dq_own * zq2
    dwq1 += dq_own * zq1
    dwq2 += dq_own * zq
    # row t - 6: du (ds is known up to t), then the gates' gradients with k^, v^ recomputed from raw rows
    du = (hc[0] * ds6 + hc[1] * ds5 + hc[2] * ds4 + hc[3] * ds3 + hc[4] * ds2 + hc[5] * ds1 + hc[6] * ds)
    dk = du * (wv[0] * zv8 + wv[1] * zv7 + wv[2] * zv6)
    dv = du * (wk[0] * zk8 + wk[1] * zk7 + wk[2] * zk6)
    own6 = (t - 6 >= t0) & (t - 6 < t1)
    dk_own = tl.where(own6, dk, 0.0)
    dv_own = tl.where(own6, dv, 0.0)
    dwk0 += dk_own * zk8
    dwk1 += dk_own * zk7
    dwk2 += dk_own * zk6
    dwv0 += dv_own * zv8
    dwv1 += dv_own * zv7
    dwv2 += dv_own * zv6
    # dz through the featurizer: q at row t - 2, k and v at row t - 8
    dt = dz_ptr.dtype.element_ty
    tq = t - 2
    tl.store(dz_ptr + tq * C + c3, (wq[2] * dq2 + wq[1] * dq1 + wq[0] * dq).to(dt),
             mask=mc & (tq >= t0) & (tq < t1))
    tk = t - 8
    p = dz_ptr + tk * C + c3
    m = mc & (tk >= t0) & (tk < t1)
    tl.store(p + 1, (wk[2] * dk2 + wk[1] * dk1 + wk[0] * dk).to(dt), mask=m)
    tl.store(p + 2, (wv[2] * dv2 + wv[1] * dv1 + wv[0] * dv).to(dt), mask=m)
    st = (zq, zq1, zk, zk1, zk2, zk3, zk4, zk5, zk6, zk7, zv, zv1, zv2, zv3, zv4, zv5, zv6, zv7,
          u, u1, u2, u3, u4, u5, ds, ds1, ds2, ds3, ds4, ds5, dq, dq1, dk, dk1, dv, dv1)
    acc = (dh0, dh1, dh2, dh3, dh4, dh5, dh6, dwq0, dwq1, dwq2, dwk0, dwk1, dwk2, dwv0, dwv1, dwv2)
    return st, acc


@triton.jit
def _se_bwd_kernel(z_ptr, w_ptr, h_ptr, dy_ptr, dz_ptr, dh_part_ptr, dw_part_ptr, L, C, D, GS, SEG,
                   K: tl.constexpr, BD: tl.constexpr):
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    z_ptr += pid_b.to(tl.int64) * L * C
    dz_ptr += pid_b.to(tl.int64) * L * C
    dy_ptr += pid_b.to(tl.int64) * L * D
    c = pid_c * BD + tl.arange(0, BD)
    mc = c < D
    c3 = 3 * c
    wq, wk, wv = _w3(w_ptr, c, mc, 0), _w3(w_ptr, c, mc, 1), _w3(w_ptr, c, mc, 2)
    hc = _taps(h_ptr, c, mc, GS, K)
    t0 = pid_s * SEG
    t1 = tl.minimum(t0 + SEG, L)
    f = tl.zeros((BD,), tl.float32)
    (zq1, zq2, zk1, zk2, zk3, zk4, zk5, zk6, zk7, zk8, zv1, zv2, zv3, zv4, zv5, zv6, zv7, zv8,
     u1, u2, u3, u4, u5, u6, ds1, ds2, ds3, ds4, ds5, ds6, dq1, dq2, dk1, dk2, dv1, dv2) = (
        f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f)
    (dh0, dh1, dh2, dh3, dh4, dh5, dh6, dwq0, dwq1, dwq2, dwk0, dwk1, dwk2, dwv0, dwv1, dwv2) = (
        f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f)
    # 8 warm-up rows (as the forward) and 8 look-ahead rows: dz of row t1 - 1 needs ds up to t1 + 7
    for t_first in range(t0 - 8, t1 + 8, 4):
        t = t_first + tl.zeros((BD,), tl.int32)
        xa = _ld_bwd(z_ptr, dy_ptr, t, c, c3, mc, L, C, D)
        xb = _ld_bwd(z_ptr, dy_ptr, t + 1, c, c3, mc, L, C, D)
        xc = _ld_bwd(z_ptr, dy_ptr, t + 2, c, c3, mc, L, C, D)
        xd = _ld_bwd(z_ptr, dy_ptr, t + 3, c, c3, mc, L, C, D)
        st = (zq1, zq2, zk1, zk2, zk3, zk4, zk5, zk6, zk7, zk8, zv1, zv2, zv3, zv4, zv5, zv6, zv7, zv8,
              u1, u2, u3, u4, u5, u6, ds1, ds2, ds3, ds4, ds5, ds6, dq1, dq2, dk1, dk2, dv1, dv2)
        acc = (dh0, dh1, dh2, dh3, dh4, dh5, dh6, dwq0, dwq1, dwq2, dwk0, dwk1, dwk2, dwv0, dwv1, dwv2)
        st, acc = _bwd_row(xa, st, acc, wq, wk, wv, hc, dz_ptr, t, t0, t1, c3, mc, C)
        st, acc = _bwd_row(xb, st, acc, wq, wk, wv, hc, dz_ptr, t + 1, t0, t1, c3, mc, C)
        st, acc = _bwd_row(xc, st, acc, wq, wk, wv, hc, dz_ptr, t + 2, t0, t1, c3, mc, C)
        st, acc = _bwd_row(xd, st, acc, wq, wk, wv, hc, dz_ptr, t + 3, t0, t1, c3, mc, C)
        (zq1, zq2, zk1, zk2, zk3, zk4, zk5, zk6, zk7, zk8, zv1, zv2, zv3, zv4, zv5, zv6, zv7, zv8,
         u1, u2, u3, u4, u5, u6, ds1, ds2, ds3, ds4, ds5, ds6, dq1, dq2, dk1, dk2, dv1, dv2) = st
        (dh0, dh1, dh2, dh3, dh4, dh5, dh6, dwq0, dwq1, dwq2, dwk0, dwk1, dwk2, dwv0, dwv1, dwv2) = acc
    prog = (pid_b * tl.num_programs(0) + pid_s).to(tl.int64)
    ph = dh_part_ptr + (prog * D + c) * 8  # (programs, D, 8): taps in convolution order
    tl.store(ph, dh0, mask=mc)
    tl.store(ph + 1, dh1, mask=mc)
    tl.store(ph + 2, dh2, mask=mc)
    tl.store(ph + 3, dh3, mask=mc)
    tl.store(ph + 4, dh4, mask=mc)
    tl.store(ph + 5, dh5, mask=mc)
    tl.store(ph + 6, dh6, mask=mc)
    pw = dw_part_ptr + (prog * C + c3) * 3  # (programs, C, 3), rows 3c + (q, k, v) as w
    tl.store(pw, dwq0, mask=mc)
    tl.store(pw + 1, dwq1, mask=mc)
    tl.store(pw + 2, dwq2, mask=mc)
    tl.store(pw + 3, dwk0, mask=mc)
    tl.store(pw + 4, dwk1, mask=mc)
    tl.store(pw + 5, dwk2, mask=mc)
    tl.store(pw + 6, dwv0, mask=mc)
    tl.store(pw + 7, dwv1, mask=mc)
    tl.store(pw + 8, dwv2, mask=mc)


def _grid(B, L, D, BD, seg):
    if seg is None:  # ~8K programs hide each thread's serial walk; >= 128 rows keep the warm-up cheap
        seg = max(128, triton.next_power_of_2(triton.cdiv(B * L * triton.cdiv(D, BD), 8192)))
    assert seg % UNROLL == 0
    return seg, (triton.cdiv(L, seg), triton.cdiv(D, BD), B)


def _check(z_BLC, w_CF, h_GK):
    assert z_BLC.is_contiguous() and w_CF.shape[1] == 3 and w_CF.dtype == torch.float32
    assert h_GK.dtype == torch.float32 and h_GK.is_contiguous() and h_GK.shape[1] <= MAX_TAPS


def se_conv_fwd(z_BLC, w_CF, h_GK, BD=128, num_warps=4, seg=None):
    """y (B, L, D) from z (B, L, 3D); w (3D, 3) fp32; h (G, K <= 7) fp32 in stored cross-correlation order."""
    _check(z_BLC, w_CF, h_GK)
    B, L, C = z_BLC.shape
    D, (G, K) = C // 3, h_GK.shape
    seg, grid = _grid(B, L, D, BD, seg)
    y_BLD = _empty(B, L, D, like=z_BLC)
    _se_fwd_kernel[grid](z_BLC, w_CF, h_GK, y_BLD, L, C, D, D // G, seg, K=K, BD=BD, num_warps=num_warps)
    return y_BLD


def se_conv_bwd(dy_BLD, z_BLC, w_CF, h_GK, BD=128, num_warps=4, seg=None):
    """dz (B, L, 3D), dw (3D, 3) fp32, dh (G, K) fp32 (stored order) for the output gradient dy."""
    _check(z_BLC, w_CF, h_GK)
    B, L, C = z_BLC.shape
    D, (G, K) = C // 3, h_GK.shape
    seg, grid = _grid(B, L, D, BD, seg)
    programs = grid[0] * B
    dz_BLC = _empty(B, L, C, like=z_BLC)
    dh_part = _empty(programs, D, 8, like=z_BLC, dtype=torch.float32)
    dw_part = _empty(programs, C, 3, like=z_BLC, dtype=torch.float32)
    _se_bwd_kernel[grid](z_BLC, w_CF, h_GK, dy_BLD.contiguous(), dz_BLC, dh_part, dw_part, L, C, D, D // G, seg,
                         K=K, BD=BD, num_warps=num_warps)
    dh_GK = dh_part.sum(0)[:, :K].view(G, D // G, K).sum(1).flip(1)  # convolution order -> stored order
    return dz_BLC, dw_part.sum(0), dh_GK


class SEConvFn(torch.autograd.Function):
    """Autograd for the fused SE core. Inputs: z (B, L, 3D) contiguous, featurizer w (3D, 3) fp32, h (G, K <= 7)
    fp32 in stored (cross-correlation) order."""

    @staticmethod
    def forward(ctx, z_BLC, w_CF, h_GK):
        ctx.save_for_backward(z_BLC, w_CF, h_GK)
        return se_conv_fwd(z_BLC, w_CF, h_GK)

    @staticmethod
    def backward(ctx, dy_BLD):
        z_BLC, w_CF, h_GK = ctx.saved_tensors
        return se_conv_bwd(dy_BLD, z_BLC, w_CF, h_GK)
