"""Triton kernels for the fused Hyena-SE / Hyena-MR core, forward and backward, and `HyenaConvFn`.

Legend: B batch, L length, D channels, C = 3D projection channels, F featurizer length, G filter groups,
GS = D / G channels per group, K filter length, BL block of positions, BD channel tile (inside one group),
BC channel tile of the featurizer backward, S segments of consecutive blocks (one program each).

Each program owns one batch row, one segment of consecutive blocks and one channel tile inside a group. It
reads the projected features z once per block (the F shifted loads of the featurizer hit L1/L2), rebuilds
q^, k^, v^ on chip and never writes them. The convolution is the two-stage blocked form (spec §9.5): with
BL >= K and h in convolution tap order (h[0] meets the current sample),
    s_n = H0 u_n + H1 u_{n-1},   H0[a, b] = h[a - b] (0 <= a - b < K),   H1[a, b] = h[a - b + BL] (< K),
two (BL x BL) @ (BL x BD) tensor-core products per block, H0/H1 built once per program from the group's
filter; u_{n-1} is carried from the previous iteration. Backward (same tiling, blocks ascending):
    dq^ = dy s,   ds = dy q^,   du_n = H0^T ds_n + H1^T ds_{n+1} + D ds_n,   dk^ = du v^,   dv^ = du k^,
    dH0 = ds_n u_n^T, dH1 = ds_n u_{n-1}^T: one (BL x BL) partial per program, folded into dh[(a - b) mod BL]
    on the host after summing partials (no atomics), dD likewise per program;
then a second kernel takes d(z^) back through the featurizer (dz and its weight gradient, per-segment partials).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _featurize(z_ptr, t_idx, c_idx, mask_c, L, C, WHICH: tl.constexpr, w0, w1, w2,
               BL: tl.constexpr, BD: tl.constexpr):
    # z^[t] = w0 z[t-2] + w1 z[t-1] + w2 z[t] on projection channel 3c + WHICH; zero outside [0, L)
    ptr = z_ptr + t_idx[:, None] * C + (3 * c_idx + WHICH)[None, :]
    ok = (t_idx >= 0) & (t_idx < L)
    acc = w2[None, :] * tl.load(ptr, mask=ok[:, None] & mask_c[None, :], other=0.0).to(tl.float32)
    acc += w1[None, :] * tl.load(ptr - C, mask=(ok & (t_idx >= 1))[:, None] & mask_c[None, :],
                                 other=0.0).to(tl.float32)
    acc += w0[None, :] * tl.load(ptr - 2 * C, mask=(ok & (t_idx >= 2))[:, None] & mask_c[None, :],
                                 other=0.0).to(tl.float32)
    return acc


@triton.jit
def _weights(w_ptr, c_idx, mask_c, WHICH: tl.constexpr):
    ch = (3 * c_idx + WHICH) * 3
    return (tl.load(w_ptr + ch, mask=mask_c, other=0.0), tl.load(w_ptr + ch + 1, mask=mask_c, other=0.0),
            tl.load(w_ptr + ch + 2, mask=mask_c, other=0.0))


@triton.jit
def _toeplitz(h_ptr, j: tl.constexpr, K: tl.constexpr, BL: tl.constexpr, DT: tl.constexpr):
    # H_j[a, b] = h[a - b + j BL], zero outside [0, K)
    m = tl.arange(0, BL)[:, None] - tl.arange(0, BL)[None, :] + j * BL
    return tl.load(h_ptr + m, mask=(m >= 0) & (m < K), other=0.0).to(DT)


@triton.jit
def _tile_setup(pid_c, TPG, GS, BD: tl.constexpr):
    g = pid_c // TPG
    cg = (pid_c % TPG) * BD + tl.arange(0, BD)
    return g, g * GS + cg, cg < GS


@triton.jit
def _hyena_fwd_kernel(z_ptr, w_ptr, h_ptr, skip_ptr, y_ptr, L, C, D, GS, TPG, BPS,
                      K: tl.constexpr, NB: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
                      HAS_SKIP: tl.constexpr, PREC: tl.constexpr):
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g, c_idx, mask_c = _tile_setup(pid_c, TPG, GS, BD)
    z_ptr += pid_b.to(tl.int64) * L * C
    y_ptr += pid_b.to(tl.int64) * L * D
    DT = z_ptr.dtype.element_ty  # tensor-core operands in the input dtype (fp32 runs as exact fp32)
    H0 = _toeplitz(h_ptr + g * K, 0, K, BL, DT)
    H1 = _toeplitz(h_ptr + g * K, 1, K, BL, DT)
    H2 = _toeplitz(h_ptr + g * K, 2, K, BL, DT)  # all zero (and unused) when NB == 2
    qw0, qw1, qw2 = _weights(w_ptr, c_idx, mask_c, 0)
    kw0, kw1, kw2 = _weights(w_ptr, c_idx, mask_c, 1)
    vw0, vw1, vw2 = _weights(w_ptr, c_idx, mask_c, 2)
    skip = tl.load(skip_ptr + c_idx, mask=mask_c & HAS_SKIP, other=0.0)  # no access without a skip
    ar = tl.arange(0, BL)
    n0 = pid_s * BPS
    n1 = tl.minimum(n0 + BPS, tl.cdiv(L, BL))
    t = (n0 - 1) * BL + ar
    u_p1 = (_featurize(z_ptr, t, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
            * _featurize(z_ptr, t, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD))
    t = t - BL
    u_p2 = (_featurize(z_ptr, t, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
            * _featurize(z_ptr, t, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD))
    for n in range(n0, n1):
        t_idx = n * BL + ar
        u = (_featurize(z_ptr, t_idx, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
             * _featurize(z_ptr, t_idx, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD))
        s = tl.dot(H0, u.to(DT), input_precision=PREC)
        s = tl.dot(H1, u_p1.to(DT), s, input_precision=PREC)
        if NB == 3:
            s = tl.dot(H2, u_p2.to(DT), s, input_precision=PREC)
        if HAS_SKIP:
            s += skip[None, :] * u
        q = _featurize(z_ptr, t_idx, c_idx, mask_c, L, C, 0, qw0, qw1, qw2, BL, BD)
        m = (t_idx < L)[:, None] & mask_c[None, :]
        tl.store(y_ptr + t_idx[:, None] * D + c_idx[None, :], (q * s).to(y_ptr.dtype.element_ty), mask=m)
        u_p2 = u_p1
        u_p1 = u


@triton.jit
def _hyena_bwd_kernel(z_ptr, w_ptr, h_ptr, skip_ptr, dy_ptr, dzf_ptr, dh_part_ptr, dskip_part_ptr,
                      L, C, D, GS, TPG, BPS, NSEG,
                      K: tl.constexpr, NB: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr,
                      HAS_SKIP: tl.constexpr, PREC: tl.constexpr):
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g, c_idx, mask_c = _tile_setup(pid_c, TPG, GS, BD)
    z_ptr += pid_b.to(tl.int64) * L * C
    dzf_ptr += pid_b.to(tl.int64) * L * C
    dy_ptr += pid_b.to(tl.int64) * L * D
    DT = z_ptr.dtype.element_ty
    H0 = _toeplitz(h_ptr + g * K, 0, K, BL, DT)
    H1 = _toeplitz(h_ptr + g * K, 1, K, BL, DT)
    H2 = _toeplitz(h_ptr + g * K, 2, K, BL, DT)
    qw0, qw1, qw2 = _weights(w_ptr, c_idx, mask_c, 0)
    kw0, kw1, kw2 = _weights(w_ptr, c_idx, mask_c, 1)
    vw0, vw1, vw2 = _weights(w_ptr, c_idx, mask_c, 2)
    skip = tl.load(skip_ptr + c_idx, mask=mask_c & HAS_SKIP, other=0.0)
    ar = tl.arange(0, BL)
    n0 = pid_s * BPS
    n1 = tl.minimum(n0 + BPS, tl.cdiv(L, BL))
    t = (n0 - 1) * BL + ar
    u_p1 = (_featurize(z_ptr, t, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
            * _featurize(z_ptr, t, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD))
    t = t - BL
    u_p2 = (_featurize(z_ptr, t, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
            * _featurize(z_ptr, t, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD))
    # dy and ds = dy q^ of this block and the next (NB == 3 looks two blocks ahead)
    t = n0 * BL + ar
    dy_c = tl.load(dy_ptr + t[:, None] * D + c_idx[None, :], mask=(t < L)[:, None] & mask_c[None, :],
                   other=0.0).to(tl.float32)
    ds_c = dy_c * _featurize(z_ptr, t, c_idx, mask_c, L, C, 0, qw0, qw1, qw2, BL, BD)
    t = t + BL
    dy_1 = tl.load(dy_ptr + t[:, None] * D + c_idx[None, :], mask=(t < L)[:, None] & mask_c[None, :],
                   other=0.0).to(tl.float32)
    ds_1 = dy_1 * _featurize(z_ptr, t, c_idx, mask_c, L, C, 0, qw0, qw1, qw2, BL, BD)
    lower = ar[:, None] >= ar[None, :]
    dhA = tl.zeros((BL, BL), tl.float32)  # taps (a - b) mod (NB-1) BL: H0 below the diagonal, H_{NB-1} above
    dhB = tl.zeros((BL, BL), tl.float32)  # NB == 3: taps a - b + BL (H1)
    dskip_acc = tl.zeros((BD,), tl.float32)
    for n in range(n0, n1):
        t_idx = n * BL + ar
        m = (t_idx < L)[:, None] & mask_c[None, :]
        t_far = t_idx + (NB - 1) * BL
        dy_f = tl.load(dy_ptr + t_far[:, None] * D + c_idx[None, :], mask=(t_far < L)[:, None] & mask_c[None, :],
                       other=0.0).to(tl.float32)
        ds_f = dy_f * _featurize(z_ptr, t_far, c_idx, mask_c, L, C, 0, qw0, qw1, qw2, BL, BD)
        if NB == 2:
            dy_1 = dy_f
            ds_1 = ds_f
        k = _featurize(z_ptr, t_idx, c_idx, mask_c, L, C, 1, kw0, kw1, kw2, BL, BD)
        v = _featurize(z_ptr, t_idx, c_idx, mask_c, L, C, 2, vw0, vw1, vw2, BL, BD)
        u = k * v
        u_lo, p1_lo, ds_lo = u.to(DT), u_p1.to(DT), ds_c.to(DT)
        s = tl.dot(H0, u_lo, input_precision=PREC)                     # recompute the forward
        s = tl.dot(H1, p1_lo, s, input_precision=PREC)
        # transpose of the Toeplitz map, as du^T = sum_j ds_{n+j}^T H_j (no transposed copies of H)
        du = tl.dot(tl.trans(ds_lo), H0, input_precision=PREC)
        du = tl.dot(tl.trans(ds_1.to(DT)), H1, du, input_precision=PREC)
        if NB == 3:
            p2_lo = u_p2.to(DT)
            s = tl.dot(H2, p2_lo, s, input_precision=PREC)
            du = tl.dot(tl.trans(ds_f.to(DT)), H2, du, input_precision=PREC)
        du = tl.trans(du)
        if HAS_SKIP:
            s += skip[None, :] * u
            du += skip[None, :] * ds_c
            dskip_acc += tl.sum(ds_c * u, axis=0)
        out = dzf_ptr + t_idx[:, None] * C + 3 * c_idx[None, :]
        tl.store(out, (dy_c * s).to(dzf_ptr.dtype.element_ty), mask=m)
        tl.store(out + 1, (du * v).to(dzf_ptr.dtype.element_ty), mask=m)
        tl.store(out + 2, (du * k).to(dzf_ptr.dtype.element_ty), mask=m)
        # dH_j = ds_n u_{n-j}^T, folded onto taps on the host
        p0 = tl.dot(ds_lo, tl.trans(u_lo), input_precision=PREC)
        if NB == 2:
            dhA += tl.where(lower, p0, tl.dot(ds_lo, tl.trans(p1_lo), input_precision=PREC))
        else:
            dhA += tl.where(lower, p0, tl.dot(ds_lo, tl.trans(p2_lo), input_precision=PREC))
            dhB += tl.dot(ds_lo, tl.trans(p1_lo), input_precision=PREC)
        u_p2 = u_p1
        u_p1 = u
        if NB == 2:
            dy_c = dy_f
            ds_c = ds_f
        else:
            dy_c = dy_1
            ds_c = ds_1
            dy_1 = dy_f
            ds_1 = ds_f
    prog = ((pid_b * NSEG + pid_s) * tl.num_programs(1) + pid_c).to(tl.int64) * (NB - 1)
    tile = ar[:, None] * BL + ar[None, :]
    tl.store(dh_part_ptr + prog * BL * BL + tile, dhA)
    if NB == 3:
        tl.store(dh_part_ptr + (prog + 1) * BL * BL + tile, dhB)
    if HAS_SKIP:
        tl.store(dskip_part_ptr + (pid_b * NSEG + pid_s).to(tl.int64) * D + c_idx, dskip_acc, mask=mask_c)


@triton.jit
def _featurizer_bwd_kernel(z_ptr, w_ptr, dzf_ptr, dz_ptr, dw_part_ptr, L, C, BPS, NSEG,
                           F: tl.constexpr, FP: tl.constexpr, BL: tl.constexpr, BC: tl.constexpr):
    # dz[t] = sum_i w[i] dz^[t + (F-1) - i];  dw[i] = sum_t dz^[t] z[t - (F-1) + i]
    pid_s, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    base = pid_b.to(tl.int64) * L * C
    z_ptr += base
    dzf_ptr += base
    dz_ptr += base
    c = pid_c * BC + tl.arange(0, BC)
    mask_c = c < C
    ar = tl.arange(0, BL)
    taps = tl.arange(0, FP)[None, :]
    n0 = pid_s * BPS
    n1 = tl.minimum(n0 + BPS, tl.cdiv(L, BL))
    dw_acc = tl.zeros((BC, FP), tl.float32)
    for n in range(n0, n1):
        t = n * BL + ar
        m = (t < L)[:, None] & mask_c[None, :]
        g0 = tl.load(dzf_ptr + t[:, None] * C + c[None, :], mask=m, other=0.0).to(tl.float32)
        dz = tl.zeros((BL, BC), tl.float32)
        for i in tl.static_range(F):
            tg = t + (F - 1) - i
            g = tl.load(dzf_ptr + tg[:, None] * C + c[None, :], mask=(tg < L)[:, None] & mask_c[None, :],
                        other=0.0).to(tl.float32)
            w = tl.load(w_ptr + c * F + i, mask=mask_c, other=0.0)
            dz += w[None, :] * g
            tz = t - (F - 1) + i
            x = tl.load(z_ptr + tz[:, None] * C + c[None, :], mask=((tz >= 0) & (tz < L))[:, None] & mask_c[None, :],
                        other=0.0).to(tl.float32)
            dw_acc += tl.where(taps == i, tl.sum(g0 * x, axis=0)[:, None], 0.0)
        tl.store(dz_ptr + t[:, None] * C + c[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m)
    out = dw_part_ptr + (pid_b * NSEG + pid_s).to(tl.int64) * C * F + c[:, None] * F + taps
    tl.store(out, dw_acc, mask=mask_c[:, None] & (taps < F))


# tests set this: every output buffer starts as NaN, so memory a kernel fails to write fails loudly
POISON = False


def _empty(*shape, like, dtype=None):
    out = torch.empty(*shape, device=like.device, dtype=dtype or like.dtype)
    return out.fill_(float("nan")) if POISON else out


# programs to aim for: enough to hide each program's serial chain of blocks; the backward writes one or two
# (BL x BL) fp32 partials per program, so it aims lower. The split kernels' figures are the best of the H200
# sweep (benchmarks/operators.py --sweep-only --sweep-ops mr: forward 1.71 ms at 4K programs, backward 8.8 ms
# in two passes at 16K programs and 4 warps, against 10.5-13.9 ms in one pass)
_FWD_PROGRAMS, _BWD_PROGRAMS = 16384, 8192
_SPLIT_FWD_PROGRAMS, _SPLIT_BWD_PROGRAMS = 4096, 16384


def _segments(num_blocks: int, other_programs: int, target: int) -> tuple[int, int]:
    per_seg = max(1, min(num_blocks, triton.cdiv(num_blocks * other_programs, target)))
    return per_seg, triton.cdiv(num_blocks, per_seg)


def _channel_tiles(D: int, G: int, BD: int | None) -> tuple[int, int, int]:
    GS = D // G
    if BD is None:  # tensor-core tiles need >= 16 columns; groups narrower than that are masked
        BD = max(16, min(64, triton.next_power_of_2(GS)))
    return GS, BD, triton.cdiv(GS, BD)


def num_toeplitz_blocks(K: int, BL: int) -> int:
    """2 when the filter fits one block (K <= BL), 3 when it spans two (K <= 2 BL)."""
    if K > 2 * BL or BL < 16:
        raise ValueError(f"block length {BL} must be >= 16 and >= K/2 = {K / 2}")
    return 2 if K <= BL else 3


def _prec(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # low-precision operands ignore it


def _check(z_BLC, w_CF):
    assert z_BLC.is_contiguous() and w_CF.shape[1] == 3 and w_CF.dtype == torch.float32


def _variant(variant: str, NB: int) -> str:
    """"split" (mr_triton.py: contiguous z tiles, de-interleaved on the tensor cores; filters spanning two
    blocks, i.e. MR) or "gather" (the kernels here, stride-3 loads; short MR filters, K <= 64)."""
    if variant == "auto":
        return "split" if NB == 3 else "gather"
    if variant not in ("split", "gather") or (variant == "split" and NB != 3):
        raise ValueError(f"variant {variant!r} with {NB} Toeplitz blocks")
    return variant


def hyena_conv_fwd(z_BLC, w_CF, h_GK, skip_D, BL, BD=None, num_warps=4, programs=None, variant="auto",
                   h_in_loop=False, num_stages=None, prefetch=True):
    _check(z_BLC, w_CF)
    B, L, C = z_BLC.shape
    D, (G, K) = C // 3, h_GK.shape
    split = _variant(variant, num_toeplitz_blocks(K, BL)) == "split"
    GS, BD, TPG = _channel_tiles(D, G, BD or (16 if split else None))  # split: wider tiles overflow shared memory
    bps, nseg = _segments(triton.cdiv(L, BL), B * G * TPG,
                          programs or (_SPLIT_FWD_PROGRAMS if split else _FWD_PROGRAMS))
    y_BLD = _empty(B, L, D, like=z_BLC)
    has_skip = skip_D is not None
    if split:
        from .mr_triton import _mr_fwd_kernel, split_layout, toeplitz_tiles
        stages = {} if num_stages is None else dict(num_stages=num_stages)
        _mr_fwd_kernel[(nseg, G * TPG, B)](
            z_BLC, w_CF, toeplitz_tiles(h_GK, BL, z_BLC.dtype), skip_D if has_skip else h_GK, y_BLD,
            L, C, D, GS, TPG, bps, BL=BL, BD=BD, **split_layout(GS, BD), HAS_SKIP=has_skip,
            H_IN_LOOP=h_in_loop, PREC=_prec(z_BLC.dtype), PREFETCH=prefetch, num_warps=num_warps, **stages)
        return y_BLD
    _hyena_fwd_kernel[(nseg, G * TPG, B)](
        z_BLC, w_CF, h_GK, skip_D if has_skip else h_GK, y_BLD, L, C, D, GS, TPG, bps,
        K=K, NB=num_toeplitz_blocks(K, BL), BL=BL, BD=BD, HAS_SKIP=has_skip, PREC=_prec(z_BLC.dtype),
        num_warps=num_warps)
    return y_BLD


def hyena_conv_bwd(dy_BLD, z_BLC, w_CF, h_GK, skip_D, BL, BD=None, num_warps=4, programs=None, BC=64, BL2=64,
                   variant="auto", h_in_loop=False, num_stages=None, two_pass=True, prefetch=True):
    _check(z_BLC, w_CF)
    B, L, C = z_BLC.shape
    D, (G, K) = C // 3, h_GK.shape
    NB = num_toeplitz_blocks(K, BL)
    split = _variant(variant, NB) == "split"
    GS, BD, TPG = _channel_tiles(D, G, BD or (16 if split else None))
    bps, nseg = _segments(triton.cdiv(L, BL), B * G * TPG,
                          programs or (_SPLIT_BWD_PROGRAMS if split else _BWD_PROGRAMS))
    dev, has_skip = z_BLC.device, skip_D is not None
    dzf_BLC = _empty(B, L, C, like=z_BLC)
    dh_part = _empty(B * nseg * G * TPG, NB - 1, BL, BL, like=z_BLC, dtype=torch.float32)
    dskip_part = _empty(B * nseg, D, like=z_BLC, dtype=torch.float32) if has_skip else dh_part
    if split:
        from .mr_triton import _mr_bwd_kernel, split_layout, toeplitz_tiles
        stages = {} if num_stages is None else dict(num_stages=num_stages)
        args = (z_BLC, w_CF, toeplitz_tiles(h_GK, BL, z_BLC.dtype), skip_D if has_skip else h_GK,
                dy_BLD.contiguous(), dzf_BLC, dh_part, dskip_part, L, C, D, GS, TPG, bps, nseg)
        for dz_dh in ([(True, False), (False, True)] if two_pass else [(True, True)]):
            _mr_bwd_kernel[(nseg, G * TPG, B)](
                *args, BL=BL, BD=BD, **split_layout(GS, BD), HAS_SKIP=has_skip, H_IN_LOOP=h_in_loop,
                PREC=_prec(z_BLC.dtype), PREFETCH=prefetch, DO_DZ=dz_dh[0], DO_DH=dz_dh[1], num_warps=num_warps,
                **stages)
    else:
        _hyena_bwd_kernel[(nseg, G * TPG, B)](
            z_BLC, w_CF, h_GK, skip_D if has_skip else h_GK, dy_BLD.contiguous(), dzf_BLC, dh_part, dskip_part,
            L, C, D, GS, TPG, bps, nseg,
            K=K, NB=NB, BL=BL, BD=BD, HAS_SKIP=has_skip, PREC=_prec(z_BLC.dtype), num_warps=num_warps)
    # fold the partials: sum over programs of a group, then each entry onto its tap
    P_GPLL = dh_part.view(B * nseg, G, TPG, NB - 1, BL, BL).sum((0, 2))
    ar = torch.arange(BL, device=dev)
    d_LL = ar[:, None] - ar[None, :]
    taps = [d_LL % ((NB - 1) * BL)] + ([d_LL + BL] if NB == 3 else [])  # see dhA / dhB in the kernel
    tap_idx = torch.stack(taps).flatten().expand(G, -1)
    dh_GK = torch.zeros(G, NB * BL, device=dev, dtype=torch.float32).scatter_add_(
        1, tap_idx, P_GPLL.flatten(1))[:, :K]
    dskip = dskip_part.sum(0) if has_skip else None
    dz_BLC, dw_CF = _featurizer_bwd(z_BLC, w_CF, dzf_BLC, BC, BL2)
    return dz_BLC, dw_CF, dh_GK, dskip


def _featurizer_bwd(z_BLC, w_CF, dzf_BLC, BC=64, BL2=64):
    """d(z^) back through the featurizer: dz and the weight gradient (per-segment partials summed here)."""
    B, L, C = z_BLC.shape
    bps2, nseg2 = _segments(triton.cdiv(L, BL2), B * triton.cdiv(C, BC), _BWD_PROGRAMS)
    dz_BLC = _empty(B, L, C, like=z_BLC)
    dw_part = _empty(B * nseg2, C, 3, like=z_BLC, dtype=torch.float32)
    _featurizer_bwd_kernel[(nseg2, triton.cdiv(C, BC), B)](
        z_BLC, w_CF, dzf_BLC, dz_BLC, dw_part, L, C, bps2, nseg2, F=3, FP=4, BL=BL2, BC=BC, num_warps=4)
    return dz_BLC, dw_part.sum(0)


class HyenaConvFn(torch.autograd.Function):
    """Autograd for the fused core. Inputs: z (B, L, 3D) contiguous, featurizer w (3D, 3) fp32, h (G, K)
    fp32 in convolution tap order, skip D (D,) fp32 or None; BL the block (16 <= BL, K <= 2 BL)."""

    @staticmethod
    def forward(ctx, z_BLC, w_CF, h_GK, skip_D, BL):
        ctx.save_for_backward(z_BLC, w_CF, h_GK, skip_D)
        ctx.BL = BL
        return hyena_conv_fwd(z_BLC, w_CF, h_GK, skip_D, BL)

    @staticmethod
    def backward(ctx, dy_BLD):
        z_BLC, w_CF, h_GK, skip_D = ctx.saved_tensors
        dz, dw, dh, dskip = hyena_conv_bwd(dy_BLD, z_BLC, w_CF, h_GK, skip_D, ctx.BL)
        return dz, dw, dh, dskip, None
