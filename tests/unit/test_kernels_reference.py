"""The reference kernels (the specification, fp32) against independent float64 definitions and against each
other: FFT conv == direct conv, modal filter by FFT == modal recurrence, chunked state == one pass."""

from __future__ import annotations

import pytest
import torch

from evo2lite.kernels.attention import apply_rotary_ref, attention, attention_ref, rotary_tables
from evo2lite.kernels.fftconv import fftconv, fftconv_ref
from evo2lite.kernels.fir import fir, fir_ref, next_tail
from evo2lite.kernels.modal import (modal_filter_ref, modal_recurrence_ref, modal_state_output_ref,
                                    modal_state_update_ref)

# fp32 arithmetic lands far under 1e-3 (METHOD.md); these references do O(K) or O(log L) fp32 ops
FP32_REL = 2e-6


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert not torch.isnan(out).any()
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def direct_conv64(x_BLC, h_GK, current_tap):
    """float64 loops over taps, straight from spec §2.4-2.6 (zero input before t = 0)."""
    B, L, C = x_BLC.shape
    G, K = h_GK.shape
    h = h_GK.double().repeat_interleave(C // G, dim=0)  # channel c uses filter c // (C / G)
    x = x_BLC.double()
    y = torch.zeros(B, L, C, dtype=torch.float64)
    for m in range(K):  # lag m: x[t - m]
        tap = h[:, m] if current_tap == "first" else h[:, K - 1 - m]
        if m < L:
            y[:, m:] += tap * x[:, : L - m]
    return y


# --- FIR ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("current_tap", ["first", "last"])
@pytest.mark.parametrize("L, C, G, K", [(37, 12, 3, 3), (50, 48, 48, 7), (300, 64, 4, 128), (90, 60, 4, 128)])
def test_fir_ref_matches_the_definition(current_tap, L, C, G, K):
    x = torch.randn(2, L, C, generator=gen(L))
    h = torch.randn(G, K, generator=gen(K))
    out = fir_ref(x, h, current_tap=current_tap)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert rel_err(out, direct_conv64(x, h, current_tap)) < FP32_REL


def test_fir_tap_orders_are_reverses_of_each_other():
    x = torch.randn(1, 40, 8, generator=gen(0))
    h = torch.randn(2, 7, generator=gen(1))
    assert torch.allclose(fir_ref(x, h, current_tap="first"), fir_ref(x, h.flip(-1), current_tap="last"),
                          rtol=0, atol=1e-6)
    # "last": h[K-1] meets the current sample; "first": h[0] does
    impulse = torch.zeros(1, 10, 2)
    impulse[0, 0] = 1.0
    taps = torch.arange(1.0, 8.0).expand(2, 7).contiguous()
    assert fir_ref(impulse, taps, current_tap="first")[0, :7, 0].tolist() == taps[0].tolist()
    assert fir_ref(impulse, taps, current_tap="last")[0, :7, 0].tolist() == taps[0].flip(0).tolist()


def test_fir_groups_are_contiguous_channel_blocks():
    x = torch.randn(1, 20, 12, generator=gen(2))
    h = torch.randn(3, 5, generator=gen(3))
    out = fir_ref(x, h)
    for c in range(12):
        alone = fir_ref(x[:, :, c: c + 1], h[c // 4: c // 4 + 1])
        torch.testing.assert_close(out[:, :, c: c + 1], alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("current_tap", ["first", "last"])
def test_fir_chunks_with_tail_equal_one_pass(current_tap):
    x = torch.randn(2, 160, 16, generator=gen(4))
    h = torch.randn(4, 128, generator=gen(5))
    full = fir_ref(x, h, current_tap=current_tap)
    tail, outs, start = None, [], 0
    for n in [1, 2, 130, 1, 26]:
        chunk = x[:, start: start + n]
        outs.append(fir_ref(chunk, h, tail_BKC=tail, current_tap=current_tap))
        tail = next_tail(chunk, tail, 128)
        assert tail.shape == (2, 127, 16)
        start += n
    assert start == 160
    # same arithmetic on the same operands: identical up to conv1d's summation order
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-6, atol=1e-6)
    assert torch.equal(tail, x[:, -127:])


@pytest.mark.parametrize("current_tap", ["last", "first"])
@pytest.mark.parametrize("with_tail", [False, True])
def test_fir_in_blocks_of_positions_equals_one_pass(current_tap, with_tail):
    """fir bounds its fp32 temporaries by blocks of positions: the same numbers as fir_ref (and gradients to
    rounding), for blocks of exactly the filter's reach, inside the input, and one short of it."""
    torch.manual_seed(0)
    B, L, C, G, K = 2, 53, 6, 3, 7
    x = torch.randn(B, L, C, dtype=torch.float64, requires_grad=True)
    h = torch.randn(G, K, dtype=torch.float64, requires_grad=True)
    tail = torch.randn(B, K - 1, C, dtype=torch.float64) if with_tail else None
    want = fir_ref(x, h, tail_BKC=tail, current_tap=current_tap)
    gx, gh = torch.autograd.grad(want.sum(), (x, h))
    for rows in (K, 10, 52):  # block_elements / (B C) rows per block
        got = fir(x, h, tail_BKC=tail, current_tap=current_tap, block_elements=rows * B * C)
        assert torch.equal(got, want)  # the same operations per output; gradients are summed in another order
        for a, b in zip(torch.autograd.grad(got.sum(), (x, h)), (gx, gh)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # fir_ref sums in fp32


def test_fftconv_in_blocks_of_channels_equals_one_pass():
    torch.manual_seed(0)
    u = torch.randn(2, 40, 10, requires_grad=True)
    h = torch.randn(17, 10, requires_grad=True)
    want = fftconv_ref(u, h)
    gu, gh = torch.autograd.grad((want * want).sum(), (u, h))
    for cols in (1, 3, 9):
        got = fftconv(u, h, block_elements=cols * 2 * 41)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        for a, b in zip(torch.autograd.grad((got * got).sum(), (u, h)), (gu, gh)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_fir_is_bit_causal():
    x = torch.randn(1, 64, 8, generator=gen(6))
    h = torch.randn(8, 7, generator=gen(7))
    y = x.clone()
    y[:, 30] += 1.0
    a, b = fir_ref(x, h), fir_ref(y, h)
    assert torch.equal(a[:, :30], b[:, :30])
    assert (a[:, 30:37] != b[:, 30:37]).all()
    assert torch.equal(a[:, 37:], b[:, 37:])  # K = 7: no reach beyond t + 6


def test_fir_bf16_in_bf16_out_and_bad_arguments():
    x = torch.randn(1, 9, 4, generator=gen(8)).bfloat16()
    h = torch.randn(4, 3, generator=gen(9))
    out = fir(x, h)
    assert out.dtype == torch.bfloat16
    # computed in fp32 from the bf16 input, rounded once
    assert torch.equal(out, fir_ref(x.float(), h).bfloat16())
    with pytest.raises(ValueError, match="current_tap"):
        fir_ref(x, h, current_tap="middle")
    with pytest.raises(ValueError, match="backend"):
        fir(x, h, backend="cuda-magic")


# --- FFT conv ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("L", [1, 5, 127, 128, 129, 300])
def test_fftconv_equals_direct_conv_for_grouped_mr_filters(L):
    """Hyena-MR: K = 128 grouped filters, convolution tap order; FFT conv == direct conv (spec §2.6)."""
    D, G, K = 32, 4, 128
    u = torch.randn(2, L, D, generator=gen(L))
    h_GK = torch.randn(G, K, generator=gen(100 + L)) * torch.exp(-torch.arange(K) / 40.0)
    direct = fir_ref(u, h_GK, current_tap="first")
    via_fft = fftconv_ref(u, h_GK.repeat_interleave(D // G, dim=0).t())  # (K, D), truncated to L
    assert via_fft.dtype == torch.float32 and via_fft.shape == u.shape
    assert rel_err(via_fft, direct) < FP32_REL
    assert rel_err(via_fft, direct_conv64(u, h_GK, "first")) < FP32_REL


def test_fftconv_pads_a_short_filter():
    u = torch.randn(1, 50, 3, generator=gen(11))
    h = torch.randn(7, 3, generator=gen(12))  # shorter than L: zero-padded
    assert rel_err(fftconv(u, h), direct_conv64(u, h.t(), "first")) < FP32_REL
    with pytest.raises(ValueError, match="backend"):
        fftconv(u, h, backend="nope")


def test_fftconv_has_no_circular_wraparound():
    # an impulse at the last position must not reappear at the start (fft size 2L, not L)
    u = torch.zeros(1, 64, 1)
    u[0, -1] = 1.0
    h = torch.ones(64, 1)
    out = fftconv_ref(u, h)
    assert out[0, :-1].abs().max() < 1e-6 and abs(out[0, -1, 0].item() - 1.0) < 1e-6


# --- modal (Hyena-LR) --------------------------------------------------------------------------------

def modal_params(D: int, S: int, seed: int):
    g = gen(seed)
    log_poles = -torch.exp(torch.empty(D, S).uniform_(-7, 0.7, generator=g))  # decay rates 1e-3 .. 2
    residues = 0.1 * torch.randn(D, S, generator=g)
    return log_poles, residues


def test_modal_filter_matches_its_formula():
    lp, r = modal_params(6, 16, 0)
    h = modal_filter_ref(lp, r, 40)
    m = torch.arange(40, dtype=torch.float64)
    ref = (r.double()[None] * torch.exp(lp.double()[None] * m[:, None, None])).sum(-1)
    assert h.shape == (40, 6) and rel_err(h, ref) < FP32_REL
    assert torch.allclose(h[0], r.sum(-1))  # h[0] = sum of residues (spec §2.7)


@pytest.mark.parametrize("L", [1, 17, 256])
def test_modal_filter_via_fft_equals_the_recurrence(L):
    lp, r = modal_params(24, 16, L)
    u = torch.randn(2, L, 24, generator=gen(L))
    via_fft = fftconv_ref(u, modal_filter_ref(lp, r, L))
    recurrence = modal_recurrence_ref(u, lp, r)
    assert rel_err(via_fft, recurrence) < 5e-6


def test_modal_state_chunks_equal_one_pass():
    lp, r = modal_params(16, 16, 3)
    u = torch.randn(2, 200, 16, generator=gen(3))
    full = modal_recurrence_ref(u, lp, r)
    sigma, outs, start = None, [], 0
    for n in [1, 1, 63, 100, 2, 33]:
        chunk = u[:, start: start + n]
        y = fftconv_ref(chunk, modal_filter_ref(lp, r, n))
        if sigma is not None:
            y = y + modal_state_output_ref(sigma, lp, r, n)
        outs.append(y)
        sigma = modal_state_update_ref(sigma, chunk, lp)
        start += n
    assert start == 200
    assert rel_err(torch.cat(outs, 1), full) < 5e-6
    # the state after everything is the recurrence's sigma: sigma[t] = p sigma[t-1] + u[t]
    p = torch.exp(lp.double())
    ref = torch.zeros(2, 16, 16, dtype=torch.float64)
    for t in range(200):
        ref = p * ref + u[:, t, :, None].double()
    assert rel_err(sigma, ref) < 5e-6


# --- attention ---------------------------------------------------------------------------------------

def naive_attention64(q, k, v):
    """Causal softmax attention, queries at the last L of T positions, float64."""
    L, T, E = q.shape[2], k.shape[2], q.shape[3]
    scores = q.double() @ k.double().transpose(-1, -2) / E ** 0.5
    allowed = torch.arange(T)[None, :] <= torch.arange(T - L, T)[:, None]
    scores = scores.masked_fill(~allowed, float("-inf"))
    return scores.softmax(-1) @ v.double()


@pytest.mark.parametrize("L, T", [(20, 20), (1, 20), (7, 20)])
def test_attention_ref_is_causal_softmax_attention(L, T):
    q = torch.randn(2, 3, L, 16, generator=gen(L))
    k = torch.randn(2, 3, T, 16, generator=gen(T))
    v = torch.randn(2, 3, T, 16, generator=gen(T + 1))
    assert rel_err(attention(q, k, v), naive_attention64(q, k, v)) < 1e-5
    with pytest.raises(ValueError, match="backend"):
        attention(q, k, v, backend="flash")


def test_attention_with_cache_equals_the_last_rows_of_full_attention():
    q = torch.randn(1, 2, 30, 8, generator=gen(1))
    k = torch.randn(1, 2, 30, 8, generator=gen(2))
    v = torch.randn(1, 2, 30, 8, generator=gen(3))
    full = attention_ref(q, k, v)
    for last in (1, 9):
        torch.testing.assert_close(attention_ref(q[:, :, -last:], k, v), full[:, :, -last:], rtol=1e-5,
                                   atol=1e-6)


def test_rotary_is_rotate_half_and_relative():
    E = 16
    inv_freq = 1.0 / 10000 ** (torch.arange(0, E, 2, dtype=torch.float32) / E)
    x = torch.randn(1, 1, 1, E, generator=gen(4))
    # rotate-half pairs dim i with i + E/2 (GPT-NeoX, spec §2.9)
    cos, sin = rotary_tables(torch.tensor([3]), inv_freq, 1.0, torch.float32)
    out = apply_rotary_ref(x, cos, sin)
    angle = 3 * inv_freq
    x1, x2 = x[..., : E // 2], x[..., E // 2:]
    torch.testing.assert_close(out, torch.cat([x1 * angle.cos() - x2 * angle.sin(),
                                               x2 * angle.cos() + x1 * angle.sin()], -1))
    # q.k depends only on the position difference; interpolation divides positions by the scale
    q = torch.randn(1, 1, 1, E, generator=gen(5))
    k = torch.randn(1, 1, 1, E, generator=gen(6))

    def dot(pq, pk, scale=1.0):
        cq, sq = rotary_tables(torch.tensor([pq]), inv_freq, scale, torch.float32)
        ck, sk = rotary_tables(torch.tensor([pk]), inv_freq, scale, torch.float32)
        return (apply_rotary_ref(q, cq, sq) * apply_rotary_ref(k, ck, sk)).sum().item()

    assert dot(10, 4) == pytest.approx(dot(106, 100), rel=1e-4)
    assert dot(320, 0, scale=32.0) == pytest.approx(dot(10, 0), rel=1e-5)
    assert dot(10, 4) != pytest.approx(dot(10, 5), rel=1e-3)


def test_rotary_tables_are_cast_to_the_activation_dtype():
    inv_freq = torch.rand(8)
    cos, sin = rotary_tables(torch.arange(5), inv_freq, 1.0, torch.bfloat16)
    assert cos.dtype == sin.dtype == torch.bfloat16
    assert inv_freq.dtype == torch.float32
