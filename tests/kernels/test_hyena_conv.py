"""The fused Hyena-SE / Hyena-MR kernels against the reference composition: forward and every gradient (z,
featurizer, h, D), fresh random inputs, odd lengths, group sizes 1, 15, 16, 64, outputs NaN-poisoned first.
On the CPU the kernels run in Triton's interpreter (tests/kernels/conftest.py) on tiny fp32 shapes; the
bf16 and larger cases need CUDA."""

import os

import pytest
import torch

from evo2lite.kernels.hyena import hyena_conv, hyena_conv_ref

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs CUDA or the Triton interpreter")
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DEV = "cuda" if CUDA else "cpu"


def _inputs(B, L, D, G, K, mr, seed):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, L, 3 * D, generator=gen)
    w = torch.randn(3 * D, 3, generator=gen) * 0.5
    h = torch.randn(G, K, generator=gen) / K ** 0.5
    skip = torch.randn(D, generator=gen) if mr else None
    dy = torch.randn(B, L, D, generator=gen)
    return z, w, h, skip, dy


def _run(z, w, h, skip, dy, dtype, backend):
    leaves = [t.to(DEV).requires_grad_() for t in (z, w, h, skip) if t is not None]
    z_in = leaves[0].to(dtype)
    y = hyena_conv(z_in, *leaves[1:3], leaves[3] if skip is not None else None,
                   current_tap="first" if skip is not None else "last", backend=backend)
    grads = torch.autograd.grad(y, leaves, dy.to(DEV, dtype))
    return [y.float()] + [g.float() for g in grads]


def _check(got, want, rtol):
    for name, a, b in zip(("y", "dz", "dw", "dh", "dD"), got, want):
        assert torch.isfinite(a).all(), f"{name} has NaN/inf (unwritten output?)"
        err = (a - b).abs().max().item()
        assert err <= rtol * b.abs().max().item(), f"{name}: max error {err:.3g} vs scale {b.abs().max():.3g}"


# (B, L, D, G, K, mr): SE K=7 and MR K=128 (plus a short MR filter), odd lengths that end mid-block, group
# sizes (D / G) 16 (Evo 2 7B/40B), 15 (Evo 2 1B: masked tile), 1 (per channel), 64; MR L > 128 crosses blocks
TINY = [
    (2, 37, 16, 1, 7, False),
    (1, 53, 30, 2, 7, False),
    (1, 45, 4, 4, 7, False),
    (1, 21, 64, 1, 7, False),
    (1, 131, 16, 1, 128, True),
    (2, 29, 30, 2, 20, True),
    (1, 150, 4, 4, 128, True),
]


@pytest.mark.parametrize("B,L,D,G,K,mr", TINY)
def test_fp32_matches_reference(B, L, D, G, K, mr):
    inputs = _inputs(B, L, D, G, K, mr, seed=L * D + K)
    _check(_run(*inputs, torch.float32, "triton"), _run(*inputs, torch.float32, "reference"), 1e-5)


@gpu
@pytest.mark.parametrize("mr", [False, True])
@pytest.mark.parametrize("group_size", [1, 15, 16, 64])
def test_gpu_fp32_and_bf16(group_size, mr):
    D = 510 if group_size == 15 else 512
    G = D // group_size
    inputs = _inputs(2, 1999, D, G, 128 if mr else 7, mr, seed=group_size + mr)
    ref32 = _run(*inputs, torch.float32, "reference")
    _check(_run(*inputs, torch.float32, "triton"), ref32, 1e-5)
    # bf16: at most 2x plain PyTorch's own bf16 error against fp32, plus a small floor
    got, ref16 = _run(*inputs, torch.bfloat16, "triton"), _run(*inputs, torch.bfloat16, "reference")
    for name, a, b, r in zip(("y", "dz", "dw", "dh", "dD"), got, ref16, ref32):
        assert torch.isfinite(a).all(), name
        scale = r.abs().max().item()
        assert (a - r).abs().max() <= 2 * (b - r).abs().max() + 1e-3 * scale, name


@gpu
@pytest.mark.parametrize("K,BL,with_skip", [(7, 32, False), (7, 64, True), (20, 16, True), (20, 32, False)])
def test_gpu_other_block_lengths(K, BL, with_skip):
    # the block length is a tuning knob (the defaults are 16 for SE, 64 for MR): others give the reference's
    # numbers too, with and without the skip term; convolution tap order throughout (no skip: D = 0)
    from evo2lite.kernels.hyena.triton import hyena_conv_bwd, hyena_conv_fwd

    z, w, h, skip, dy = (t.to(DEV) for t in _inputs(2, 333, 32, 2, K, True, seed=K + BL))
    skip = skip if with_skip else None
    leaves = [t.clone().requires_grad_() for t in (z, w, h, skip if with_skip else torch.zeros_like(z[0, 0, :32]))]
    y_ref = hyena_conv_ref(*leaves, current_tap="first")
    want = [y_ref] + list(torch.autograd.grad(y_ref, leaves, dy))
    y = hyena_conv_fwd(z, w, h, skip, BL)
    dz, dw, dh, dskip = hyena_conv_bwd(dy, z, w, h, skip, BL)
    _check([y, dz, dw, dh] + ([dskip] if with_skip else []), want[:5 if with_skip else 4], 1e-5)


# MR kernels (issue #11): the stride-3 "gather" pair and the "split" pair (mr_triton.py) with their options
# (prefetch on and off, one or two backward passes, Toeplitz tiles hoisted or re-read), on group sizes 16, 15,
# 64, 1, several segments per row, with and without the skip term
MR_VARIANTS = [
    (1, 150, 32, 2, 128, 64, True, dict(variant="gather"), {}),
    (2, 61, 30, 2, 20, 16, True, dict(variant="split", programs=8, prefetch=False), dict(two_pass=True)),
    (1, 150, 64, 1, 128, 64, True, dict(variant="split", h_in_loop=True, programs=2), {}),
    (1, 45, 4, 4, 20, 16, False, dict(variant="split"), dict(two_pass=True, h_in_loop=True)),
]


@pytest.mark.parametrize("B,L,D,G,K,BL,with_skip,opts,bwd_opts", MR_VARIANTS)
def test_mr_variants_match_reference(B, L, D, G, K, BL, with_skip, opts, bwd_opts):
    from evo2lite.kernels.hyena.triton import hyena_conv_bwd, hyena_conv_fwd

    z, w, h, skip, dy = (t.to(DEV) for t in _inputs(B, L, D, G, K, True, seed=L + D + K))
    leaves = [t.clone().requires_grad_() for t in (z, w, h, skip if with_skip else torch.zeros_like(skip))]
    y_ref = hyena_conv_ref(*leaves, current_tap="first")
    want = [y_ref] + list(torch.autograd.grad(y_ref, leaves, dy))
    skip = skip if with_skip else None
    got = [hyena_conv_fwd(z, w, h, skip, BL, **opts)] + list(hyena_conv_bwd(dy, z, w, h, skip, BL, **opts,
                                                                             **bwd_opts))
    _check(got[:5 if with_skip else 4], want[:5 if with_skip else 4], 1e-5)


def test_split_variant_needs_three_blocks():
    from evo2lite.kernels.hyena.triton import hyena_conv_fwd

    z, w, h, _, _ = (t.to(DEV) if t is not None else None for t in _inputs(1, 20, 16, 1, 7, False, seed=1))
    with pytest.raises(ValueError):
        hyena_conv_fwd(z, w, h, None, 16, variant="split")


def test_group_size_one_and_causality():
    # per-channel filters (G = D) and no position sees the future: perturb z at t, y before t is unchanged
    z, w, h, skip, _ = (t.to(DEV) for t in _inputs(1, 40, 4, 4, 128, True, seed=7))
    y0 = hyena_conv(z, w, h, skip, current_tap="first", backend="triton")
    z2 = z.clone()
    z2[:, 23] += 1.0
    y1 = hyena_conv(z2, w, h, skip, current_tap="first", backend="triton")
    assert torch.equal(y0[:, :23], y1[:, :23])
    assert (y0[:, 23:] != y1[:, 23:]).any()


def test_bad_input_is_a_value_error():
    z, w, h, skip, _ = _inputs(1, 8, 4, 2, 7, False, seed=0)
    with pytest.raises(ValueError):
        hyena_conv(z[..., :-1], w, h, current_tap="last")
    with pytest.raises(ValueError):
        hyena_conv(z, w, h, torch.zeros(4), current_tap="last")
    with pytest.raises(ValueError):
        hyena_conv(z, w, h, current_tap="middle")


def _random_mixer(kind: str, seed: int):
    """A Hyena-SE ("S") or -MR ("M") mixer of d_model 16 (2 filter groups), weights N(0, 0.3), on DEV."""
    import dataclasses

    from evo2lite.config import PRESETS
    from evo2lite.mixers import MIXERS

    cfg = dataclasses.replace(PRESETS["debug"], d_model=16, num_se_groups=2, num_mr_groups=2, num_heads=1)
    torch.manual_seed(seed)
    mixer = MIXERS[kind](cfg).to(DEV)
    with torch.no_grad():
        for p in mixer.parameters():
            p.normal_(0, 0.3)
    return mixer


def _fused_equals_reference(mixer, a) -> dict:
    """Run `mixer` on `a` with each backend; the output and every parameter gradient agree to 1e-5. Returns
    {backend: [y, grads...]}."""
    outs = {}
    for backend in ("triton", "reference"):
        mixer.backend = backend
        mixer.zero_grad()
        y = mixer(a)
        y.square().sum().backward()
        outs[backend] = [y] + [p.grad.clone() for _, p in sorted(mixer.named_parameters())]
    assert len(outs["triton"]) == len(list(mixer.parameters())) + 1
    for got, want in zip(outs["triton"], outs["reference"]):
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    return outs


@pytest.mark.parametrize("kind", ["S", "M"])
def test_mixer_dispatch_and_state_hand_off(kind):
    # the mixer on the fused op equals the mixer on the reference ops, forward and parameter gradients; a
    # first chunk run fused leaves the same FIR tails, and the next chunk (reference, from those tails)
    # continues the sequence exactly
    mixer = _random_mixer(kind, seed=3)
    a = torch.randn(1, 139, 16, device=DEV)
    outs = _fused_equals_reference(mixer, a)
    with torch.no_grad():
        mixer.backend = "triton"
        state_f = {}
        y1 = mixer(a[:, :100], state_f)
        mixer.backend = "reference"
        state_r = {}
        mixer(a[:, :100], state_r)
        assert state_f.keys() == state_r.keys() == {"featurizer_tail", "filter_tail"}
        for key in state_r:
            assert torch.equal(state_f[key], state_r[key]), key
        mixer.backend = "triton"  # a chunk shorter than the filter's reach continues on the reference ops
        y2 = mixer(a[:, 100:], state_f)
        full = outs["reference"][0]
        assert (torch.cat([y1, y2], 1) - full).abs().max() <= 1e-5 * full.abs().max()


@pytest.mark.parametrize("kind", ["S", "M"])
def test_chunked_prefill_runs_fused_and_continues_exactly(kind, monkeypatch):
    # chunks after the first run on the fused op too (their first K + 1 outputs recomputed from the carried
    # tails); a decode-sized chunk in between takes the reference ops; the concatenation equals one pass and
    # the tails left behind equal the reference path's
    from evo2lite.kernels import hyena

    mixer = _random_mixer(kind, seed=4)
    reach = mixer.filter.h.shape[1] + 1
    cuts = [0, 150, 151, 151 + reach + 1, 151 + reach + 1 + 3 * reach]
    a = torch.randn(2, cuts[-1], 16, device=DEV)
    fused_calls = []
    real = hyena.hyena_conv
    monkeypatch.setattr("evo2lite.mixers.hyena_conv",
                        lambda z, *args, **kw: fused_calls.append(z.shape[1]) or real(z, *args, **kw))
    with torch.no_grad():
        mixer.backend = "reference"
        full, state_r = mixer(a), {}
        mixer(a, state_r)
        mixer.backend = "triton"
        state, ys = {}, []
        for lo, hi in zip(cuts, cuts[1:]):
            ys.append(mixer(a[:, lo:hi], state))
    assert fused_calls == [150, reach + 1, 3 * reach]  # the 1-token step took the reference ops
    assert (torch.cat(ys, 1) - full).abs().max() <= 1e-5 * full.abs().max()
    for key in state_r:
        torch.testing.assert_close(state[key], state_r[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("D,G,K,seg,BD", [(32, 2, 7, 8, 16), (30, 2, 7, 12, 16), (8, 8, 7, None, 4),
                                          (24, 3, 3, 16, 8)])  # group sizes 16, 15, 1, 8; short filter
def test_se_kernel_segments_and_tiles(D, G, K, seg, BD):
    # the SE kernel's launch parameters: several segments per row (warm-up and look-ahead rows at each seam),
    # partial channel tiles, filters shorter than 7 taps; forward and every gradient
    from evo2lite.kernels.hyena.se_triton import se_conv_bwd, se_conv_fwd

    z, w, h, _, dy = (t.to(DEV) if t is not None else None for t in _inputs(2, 45, D, G, K, False, seed=D + K))
    leaves = [t.clone().requires_grad_() for t in (z, w, h)]
    want = hyena_conv_ref(*leaves, current_tap="last")
    want = [want] + list(torch.autograd.grad(want, leaves, dy))
    got = [se_conv_fwd(z, w, h, BD=BD, seg=seg)] + list(se_conv_bwd(dy, z, w, h, BD=BD, seg=seg))
    _check(got, want, 1e-5)


@pytest.mark.parametrize("kind", ["S", "M"])
def test_trainable_mixer_runs_fused_with_reference_gradients(kind, monkeypatch):
    # training runs the fused op too: after make_trainable (the MR filter parametrised as h_hat * decay) the
    # mixers still dispatch to it, with the reference's output and gradients (to h_hat through the
    # parametrisation)
    import evo2lite.mixers as mixers
    from evo2lite.train_params import make_trainable

    mixer = _random_mixer(kind, seed=5)
    make_trainable(mixer, decay_len=256)
    if kind == "M":
        assert type(mixer.filter).__name__ == "ParametrizedMediumFilter"
    calls = []
    fused = mixers.hyena_conv
    monkeypatch.setattr(mixers, "hyena_conv", lambda *a, **k: calls.append(1) or fused(*a, **k))
    _fused_equals_reference(mixer, torch.randn(2, 131, 16, device=DEV))
    assert len(calls) == 1  # the triton pass took the fused op, the reference pass did not
