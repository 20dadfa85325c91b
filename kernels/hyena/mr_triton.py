"""Hyena-MR kernels, "split" variant: the fused core of `triton.py` (same maths, same partial layouts) with the
projected features read as contiguous row segments and de-interleaved on the tensor cores.

Legend as in `triton.py`, plus BW = next_pow2(3 BD): the interleaved projection columns 3 c0 ... 3 c0 + 3 BD - 1
of a channel tile, read as one (BL, BW) tile per shift (vectorised 16-byte loads when the group is a whole
number of tiles) instead of 3 x 3 stride-3 gathers. The featurizer runs on that tile per column; q^, k^, v^ come
out of it as products with 0/1 selection matrices P_j (BW x BD), P_j[3c + j, c] = 1, which are exact (one
nonzero term per output; fp32 accumulation), and the backward writes d(z^) the same way through P_j^T as one
(BL, BW) tile. The Toeplitz tiles H_j (NB = 3 only: BL < K <= 2 BL) are materialised on the host as
(G, 3, BL, BL) in the operand dtype and either loaded once per program (H_IN_LOOP=False) or re-read from L1/L2
every block (H_IN_LOOP=True, a sweep knob: the compiler may hoist it anyway; the offline sm_90a build of the
forward gives the same registers either way). PREFETCH issues block n+1's loads before block n's products.

Backward: one pass over blocks n = n0 - 2 ... n1 + 1 that reads each block's z and dy once: block n gives
u_n, s_n, dq^_n = dy_n s_n and ds_n = dy_n q^_n; du of block m = n - 2 is completed there
(du_m^T = ds_m^T H0 + ds_{m+1}^T H1 + ds_{m+2}^T H2, + D ds_m), with k^, v^, dq^, ds of m carried two blocks
in the operand dtype DT (k^, v^ are DT values already, dq^ is stored in DT, ds is a DT tensor-core operand; the
skip term D ds_m uses that rounded ds too).

Precision: fp32 inputs stay exact fp32 throughout. bf16 inputs: z^ is rounded to bf16 before the split (plain
PyTorch's bf16 featurizer output is bf16 too); gates and accumulation in fp32 as in `triton.py`.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _cols(pid_c, TPG, GS, BD: tl.constexpr, BW: tl.constexpr, FULL: tl.constexpr):
    # the tile's group, first channel, and masks over its BD channels and BW interleaved columns
    g = pid_c // TPG
    off = (pid_c % TPG) * BD
    cd = tl.arange(0, BD)
    cw = tl.arange(0, BW)
    if FULL:  # constant masks keep the column loads vectorised
        mask_d = cd < BD
        mask_w = cw < 3 * BD
    else:
        mask_d = cd < GS - off
        mask_w = cw < 3 * tl.minimum(GS - off, BD)
    return g, g * GS + off, cd, cw, mask_d, mask_w


@triton.jit
def _rows(z_ptr, t, cw, mask_w, L, C):
    # the (BL, BW) interleaved tiles at rows t - 2, t - 1, t (zero outside [0, L)), as stored
    ptr = z_ptr + t[:, None] * C + cw[None, :]
    ok = (t >= 0) & (t < L)
    r2 = tl.load(ptr, mask=ok[:, None] & mask_w[None, :], other=0.0)
    r1 = tl.load(ptr - C, mask=(ok & (t >= 1))[:, None] & mask_w[None, :], other=0.0)
    r0 = tl.load(ptr - 2 * C, mask=(ok & (t >= 2))[:, None] & mask_w[None, :], other=0.0)
    return r0, r1, r2


@triton.jit
def _feat(r0, r1, r2, w0, w1, w2, DT: tl.constexpr):
    # z^[t] = w0 z[t-2] + w1 z[t-1] + w2 z[t], per interleaved column, in DT
    acc = w2[None, :] * r2.to(tl.float32)
    acc += w1[None, :] * r1.to(tl.float32)
    acc += w0[None, :] * r0.to(tl.float32)
    return acc.to(DT)


@triton.jit
def _sel(cw, cd, j: tl.constexpr, DT: tl.constexpr):
    # P_j (BW x BD): column c picks interleaved column 3c + j
    return tl.where(cw[:, None] == 3 * cd[None, :] + j, 1.0, 0.0).to(DT)


@triton.jit
def _sel_t(cw, cd, j: tl.constexpr, DT: tl.constexpr):
    return tl.where(3 * cd[:, None] + j == cw[None, :], 1.0, 0.0).to(DT)


@triton.jit
def _u(z_ptr, t, cw, mask_w, L, C, w0, w1, w2, P1, P2, DT: tl.constexpr, PREC: tl.constexpr):
    r0, r1, r2 = _rows(z_ptr, t, cw, mask_w, L, C)
    zf = _feat(r0, r1, r2, w0, w1, w2, DT)
    return (tl.dot(zf, P1, input_precision=PREC) * tl.dot(zf, P2, input_precision=PREC)).to(DT)


@triton.jit
def _mr_fwd_kernel(z_ptr, w_ptr, ht_ptr, skip_ptr, y_ptr, L, C, D, GS, TPG, BPS,
                   BL: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, FULL: tl.constexpr,
                   HAS_SKIP: tl.constexpr, H_IN_LOOP: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr):
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g, c0, cd, cw, mask_d, mask_w = _cols(pid_c, TPG, GS, BD, BW, FULL)
    z_ptr += pid_b.to(tl.int64) * L * C + 3 * c0
    y_ptr += pid_b.to(tl.int64) * L * D + c0
    DT = z_ptr.dtype.element_ty
    P0, P1, P2 = _sel(cw, cd, 0, DT), _sel(cw, cd, 1, DT), _sel(cw, cd, 2, DT)
    w_col = w_ptr + (3 * c0 + cw) * 3
    w0 = tl.load(w_col, mask=mask_w, other=0.0)
    w1 = tl.load(w_col + 1, mask=mask_w, other=0.0)
    w2 = tl.load(w_col + 2, mask=mask_w, other=0.0)
    skip = tl.load(skip_ptr + c0 + cd, mask=mask_d & HAS_SKIP, other=0.0)
    ar = tl.arange(0, BL)
    h_tile = ht_ptr + g * 3 * BL * BL + ar[:, None] * BL + ar[None, :]
    if not H_IN_LOOP:
        H0, H1, H2 = tl.load(h_tile), tl.load(h_tile + BL * BL), tl.load(h_tile + 2 * BL * BL)
    n0 = pid_s * BPS
    n1 = tl.minimum(n0 + BPS, tl.cdiv(L, BL))
    p1 = _u(z_ptr, (n0 - 1) * BL + ar, cw, mask_w, L, C, w0, w1, w2, P1, P2, DT, PREC)
    p2 = _u(z_ptr, (n0 - 2) * BL + ar, cw, mask_w, L, C, w0, w1, w2, P1, P2, DT, PREC)
    if PREFETCH:  # issue block n + 1's loads before block n's products, carried in registers
        r0, r1, r2 = _rows(z_ptr, n0 * BL + ar, cw, mask_w, L, C)
    for n in range(n0, n1):
        if H_IN_LOOP:
            H0, H1, H2 = tl.load(h_tile), tl.load(h_tile + BL * BL), tl.load(h_tile + 2 * BL * BL)
        t = n * BL + ar
        if PREFETCH:
            zf = _feat(r0, r1, r2, w0, w1, w2, DT)
            r0, r1, r2 = _rows(z_ptr, t + BL, cw, mask_w, L, C)
        else:
            r0, r1, r2 = _rows(z_ptr, t, cw, mask_w, L, C)
            zf = _feat(r0, r1, r2, w0, w1, w2, DT)
        u = tl.dot(zf, P1, input_precision=PREC) * tl.dot(zf, P2, input_precision=PREC)
        u_lo = u.to(DT)
        s = tl.dot(H0, u_lo, input_precision=PREC)
        s = tl.dot(H1, p1, s, input_precision=PREC)
        s = tl.dot(H2, p2, s, input_precision=PREC)
        if HAS_SKIP:
            s += skip[None, :] * u
        q = tl.dot(zf, P0, input_precision=PREC)
        tl.store(y_ptr + t[:, None] * D + cd[None, :], (q * s).to(y_ptr.dtype.element_ty),
                 mask=(t < L)[:, None] & mask_d[None, :])
        p2 = p1
        p1 = u_lo


@triton.jit
def _mr_bwd_kernel(z_ptr, w_ptr, ht_ptr, skip_ptr, dy_ptr, dzf_ptr, dh_part_ptr, dskip_part_ptr,
                   L, C, D, GS, TPG, BPS, NSEG,
                   BL: tl.constexpr, BD: tl.constexpr, BW: tl.constexpr, FULL: tl.constexpr,
                   HAS_SKIP: tl.constexpr, H_IN_LOOP: tl.constexpr, PREC: tl.constexpr, PREFETCH: tl.constexpr,
                   DO_DZ: tl.constexpr, DO_DH: tl.constexpr):
    # DO_DZ: d(z^); DO_DH: the filter / skip partials. Both in one pass, or one each in two launches (fewer
    # registers per program: the two (BL x BL) fp32 accumulators live only in the second)
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g, c0, cd, cw, mask_d, mask_w = _cols(pid_c, TPG, GS, BD, BW, FULL)
    z_ptr += pid_b.to(tl.int64) * L * C + 3 * c0
    dzf_ptr += pid_b.to(tl.int64) * L * C + 3 * c0
    dy_ptr += pid_b.to(tl.int64) * L * D + c0
    DT = z_ptr.dtype.element_ty
    P0, P1, P2 = _sel(cw, cd, 0, DT), _sel(cw, cd, 1, DT), _sel(cw, cd, 2, DT)
    Q0, Q1, Q2 = _sel_t(cw, cd, 0, DT), _sel_t(cw, cd, 1, DT), _sel_t(cw, cd, 2, DT)
    w_col = w_ptr + (3 * c0 + cw) * 3
    w0 = tl.load(w_col, mask=mask_w, other=0.0)
    w1 = tl.load(w_col + 1, mask=mask_w, other=0.0)
    w2 = tl.load(w_col + 2, mask=mask_w, other=0.0)
    skip = tl.load(skip_ptr + c0 + cd, mask=mask_d & HAS_SKIP, other=0.0)
    ar = tl.arange(0, BL)
    h_tile = ht_ptr + g * 3 * BL * BL + ar[:, None] * BL + ar[None, :]
    if not H_IN_LOOP:
        H0, H1, H2 = tl.load(h_tile), tl.load(h_tile + BL * BL), tl.load(h_tile + 2 * BL * BL)
    n0 = pid_s * BPS
    n1 = tl.minimum(n0 + BPS, tl.cdiv(L, BL))
    lower = ar[:, None] >= ar[None, :]
    dhA = tl.zeros((BL, BL), tl.float32)  # taps (a - b) mod 2 BL: H0 below the diagonal, H2 above
    dhB = tl.zeros((BL, BL), tl.float32)  # taps a - b + BL (H1)
    dskip_acc = tl.zeros((BD,), tl.float32)
    # carried from blocks n-1 and n-2 (the 1 / 2 suffixes)
    p1 = tl.zeros((BL, BD), DT)
    p2 = tl.zeros((BL, BD), DT)
    d1 = tl.zeros((BL, BD), DT)
    d2 = tl.zeros((BL, BD), DT)
    k1 = tl.zeros((BL, BD), DT)
    k2 = tl.zeros((BL, BD), DT)
    v1 = tl.zeros((BL, BD), DT)
    v2 = tl.zeros((BL, BD), DT)
    dq1 = tl.zeros((BL, BD), DT)
    dq2 = tl.zeros((BL, BD), DT)
    n_end = n1
    if DO_DZ:
        n_end = n1 + 2
    dy_mask = mask_d[None, :]
    if PREFETCH:  # issue block n + 1's loads before block n's products, carried in registers
        t = (n0 - 2) * BL + ar
        r0, r1, r2 = _rows(z_ptr, t, cw, mask_w, L, C)
        dyr = tl.load(dy_ptr + t[:, None] * D + cd[None, :], mask=((t >= 0) & (t < L))[:, None] & dy_mask, other=0.0)
    for n in range(n0 - 2, n_end):
        if H_IN_LOOP:
            H0, H1, H2 = tl.load(h_tile), tl.load(h_tile + BL * BL), tl.load(h_tile + 2 * BL * BL)
        t = n * BL + ar
        if PREFETCH:
            zf = _feat(r0, r1, r2, w0, w1, w2, DT)
            dy = dyr.to(tl.float32)
            tn = t + BL
            r0, r1, r2 = _rows(z_ptr, tn, cw, mask_w, L, C)
            dyr = tl.load(dy_ptr + tn[:, None] * D + cd[None, :], mask=((tn >= 0) & (tn < L))[:, None] & dy_mask,
                          other=0.0)
        else:
            r0, r1, r2 = _rows(z_ptr, t, cw, mask_w, L, C)
            zf = _feat(r0, r1, r2, w0, w1, w2, DT)
            dy = tl.load(dy_ptr + t[:, None] * D + cd[None, :], mask=((t >= 0) & (t < L))[:, None] & dy_mask,
                         other=0.0).to(tl.float32)
        q = tl.dot(zf, P0, input_precision=PREC)
        k = tl.dot(zf, P1, input_precision=PREC)
        v = tl.dot(zf, P2, input_precision=PREC)
        u = k * v
        u_lo = u.to(DT)
        ds = dy * q
        d0 = ds.to(DT)
        if DO_DZ:
            s = tl.dot(H0, u_lo, input_precision=PREC)  # recompute the forward
            s = tl.dot(H1, p1, s, input_precision=PREC)
            s = tl.dot(H2, p2, s, input_precision=PREC)
            if HAS_SKIP:
                s += skip[None, :] * u
            _mr_bwd_dz(dzf_ptr, H0, H1, H2, Q0, Q1, Q2, skip, d0, d1, d2, k2, v2, dq2, t, cw, mask_w, n0, L, C,
                       BL, HAS_SKIP, PREC)
            dq2 = dq1
            dq1 = (dy * s).to(DT)
        if DO_DH:  # this block's own filter / skip gradients: dH_j = ds_n u_{n-j}^T, folded onto taps on the host
            own = ((n >= n0) & (n < n1)).to(tl.float32)
            ds_own = (ds * own).to(DT)
            p0 = tl.dot(ds_own, tl.trans(u_lo), input_precision=PREC)
            dhA += tl.where(lower, p0, tl.dot(ds_own, tl.trans(p2), input_precision=PREC))
            dhB += tl.dot(ds_own, tl.trans(p1), input_precision=PREC)
            if HAS_SKIP:
                dskip_acc += own * tl.sum(ds * u, axis=0)
        p2 = p1
        p1 = u_lo
        d2 = d1
        d1 = d0
        k2 = k1
        k1 = k.to(DT)  # q^, k^, v^ are DT values already (exact selections); dq^ is rounded on output anyway
        v2 = v1
        v1 = v.to(DT)
    if DO_DH:
        prog = ((pid_b * NSEG + pid_s) * tl.num_programs(1) + pid_c).to(tl.int64) * 2
        tile = ar[:, None] * BL + ar[None, :]
        tl.store(dh_part_ptr + prog * BL * BL + tile, dhA)
        tl.store(dh_part_ptr + (prog + 1) * BL * BL + tile, dhB)
        if HAS_SKIP:
            tl.store(dskip_part_ptr + (pid_b * NSEG + pid_s).to(tl.int64) * D + c0 + cd, dskip_acc, mask=mask_d)


@triton.jit
def _mr_bwd_dz(dzf_ptr, H0, H1, H2, Q0, Q1, Q2, skip, d0, d1, d2, k2, v2, dq2, t, cw, mask_w, n0, L, C,
               BL: tl.constexpr, HAS_SKIP: tl.constexpr, PREC: tl.constexpr):
    # block m = n - 2 is complete: du^T = sum_j ds_{m+j}^T H_j (no transposed copies of H)
    DT = d2.dtype
    du = tl.dot(tl.trans(d2), H0, input_precision=PREC)
    du = tl.dot(tl.trans(d1), H1, du, input_precision=PREC)
    du = tl.trans(tl.dot(tl.trans(d0), H2, du, input_precision=PREC))
    if HAS_SKIP:
        du += skip[None, :] * d2.to(tl.float32)
    dzf = tl.dot(dq2, Q0, input_precision=PREC)
    dzf = tl.dot((du * v2.to(tl.float32)).to(DT), Q1, dzf, input_precision=PREC)
    dzf = tl.dot((du * k2.to(tl.float32)).to(DT), Q2, dzf, input_precision=PREC)
    tm = t - 2 * BL
    tl.store(dzf_ptr + tm[:, None] * C + cw[None, :], dzf.to(dzf_ptr.dtype.element_ty),
             mask=((tm < L) & (tm >= n0 * BL))[:, None] & mask_w[None, :])


def toeplitz_tiles(h_GK, BL: int, dtype):
    """(G, 3, BL, BL) tiles H_j[a, b] = h[a - b + j BL] (zero outside [0, K)) in the operand dtype."""
    import torch

    G, K = h_GK.shape
    ar = torch.arange(BL, device=h_GK.device)
    m = (ar[:, None] - ar[None, :])[None] + BL * torch.arange(3, device=h_GK.device)[:, None, None]
    ok = (m >= 0) & (m < K)
    return torch.where(ok, h_GK[:, m.clamp(0, K - 1)], 0.0).to(dtype).contiguous()


def split_layout(GS: int, BD: int) -> dict:
    """The constexprs of a channel tile: BW interleaved columns, FULL when the group is whole tiles."""
    return dict(BW=triton.next_power_of_2(3 * BD), FULL=GS % BD == 0)
