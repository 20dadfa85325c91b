"""The fused Hyena-LR core (featurizer, gates and the chunked modal kernel: kernels/modal/fused.py) against the
reference composition (featurizer, FFT modal convolution, gates as separate ops): forward, returned state
and every gradient (z, featurizer, log_poles, residues, D), fresh random inputs, odd lengths, lengths across
chunk boundaries, a carried state and featurizer tail, outputs NaN-poisoned first; the HyenaLR block uses it.
On the CPU the kernels run in Triton's interpreter (tests/kernels/conftest.py) on tiny fp32 shapes with a
small tiling; bf16 and the default tiling need CUDA."""

import dataclasses
import os

import pytest
import torch

from evo2lite.kernels.modal import modal_hyena

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs CUDA or the Triton interpreter")
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DEV = "cuda" if CUDA else "cpu"
SMALL = {"T": 4, "CH": 8, "BD": 4, "num_warps": 4}  # several chunks and channel tiles on tiny shapes


def _inputs(B, L, D, seed, state=False):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(B, L, 3 * D, generator=gen)
    w = torch.randn(3 * D, 3, generator=gen) * 0.5
    lam = -10 ** (torch.rand(D, 16, generator=gen) * 4 - 3)  # rates over four decades, as trained
    R = torch.randn(D, 16, generator=gen) / 4
    skip = torch.randn(D, generator=gen)
    sigma = torch.randn(B, D, 16, generator=gen) if state else None
    tail = torch.randn(B, 2, 3 * D, generator=gen) if state else None
    dy = torch.randn(B, L, D, generator=gen)
    return [t.to(DEV) if t is not None else None for t in (z, w, lam, R, skip, sigma, tail, dy)]


def _run(z, w, lam, R, skip, sigma, tail, dy, backend, dtype=torch.float32, cfg=None):
    leaves = [t.clone().requires_grad_() for t in (z, w, lam, R, skip)]
    if backend == "triton":
        from evo2lite.kernels.modal.fused import modal_hyena_triton
        y, state = modal_hyena_triton(leaves[0].to(dtype), *leaves[1:], sigma, tail, cfg)
    else:
        y, state = modal_hyena(leaves[0].to(dtype), *leaves[1:], sigma, tail, return_state=True, backend=backend)
    grads = torch.autograd.grad(y, leaves, dy.to(dtype))
    return [y.float(), state.float()] + [g.float() for g in grads]


NAMES = ("y", "state", "dz", "dfeaturizer", "dlog_poles", "dresidues", "dD")


def _check(got, want, rtol):
    for name, a, b in zip(NAMES, got, want):
        assert torch.isfinite(a).all(), f"{name} has NaN/inf (unwritten output?)"
        err = (a - b).abs().max().item()
        assert err <= rtol * b.abs().max().item(), f"{name}: max error {err:.3g} vs scale {b.abs().max():.3g}"


# (B, L, D, state): 3 chunks of 8, the last partial, across 2 channel tiles (one partial), with a carried
# sigma and featurizer tail; one partial chunk shorter than the featurizer's reach; an exact chunk; batch 2
TINY = [(1, 19, 5, True), (1, 2, 4, True), (1, 8, 4, False), (2, 11, 3, False)]


@pytest.mark.parametrize("B,L,D,state", TINY)
def test_fused_fp32_matches_reference(B, L, D, state):
    inputs = _inputs(B, L, D, seed=L * D, state=state)
    _check(_run(*inputs, "triton", cfg=SMALL), _run(*inputs, "reference"), 1e-5)


def test_continuing_chunk_equals_one_pass():
    # chunked prefill: sigma and the last 2 rows of z after a prefix continue the sequence exactly
    from evo2lite.kernels.modal.fused import modal_hyena_triton
    z, w, lam, R, skip, *_ = _inputs(1, 21, 4, seed=7)
    y_full, s_full = modal_hyena_triton(z, w, lam, R, skip, None, None, SMALL)
    y_a, s_a = modal_hyena_triton(z[:, :9], w, lam, R, skip, None, None, SMALL)
    y_b, s_b = modal_hyena_triton(z[:, 9:], w, lam, R, skip, s_a, z[:, 7:9], SMALL)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_b, s_full, rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_value_error():
    z, w, lam, R, skip, sigma, tail, _ = _inputs(1, 8, 4, seed=0, state=True)
    for bad in ({"z_BLC": z[..., :-1]}, {"featurizer_CF": w[:, :2]}, {"log_poles_DS": lam[:3]},
                {"D_D": skip[:3]}, {"sigma_BDS": sigma[..., :3]}, {"z_tail_B2C": tail[:, :1]}):
        args = {"z_BLC": z, "featurizer_CF": w, "log_poles_DS": lam, "residues_DS": R, "D_D": skip, **bad}
        with pytest.raises(ValueError):
            modal_hyena(**args)
    with pytest.raises(ValueError, match="detach"):
        modal_hyena(z, w, lam, R, skip, sigma.requires_grad_(), backend="triton")


def _lr_block(monkeypatch, seed=0):
    from evo2lite.config import PRESETS
    from evo2lite.kernels.modal import triton as modal_triton
    from evo2lite.mixers import HyenaLR

    monkeypatch.setattr(modal_triton, "CONFIG", SMALL)
    cfg = dataclasses.replace(PRESETS["debug"], d_model=8, num_heads=2, d_mlp=16, num_se_groups=2,
                              num_mr_groups=2)
    torch.manual_seed(seed)
    block = HyenaLR(cfg).to(DEV)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.5)
        block.filter.log_poles.copy_(-10 ** (torch.rand_like(block.filter.log_poles) * 4 - 3))
    return block


@pytest.mark.parametrize("trainable", [False, True])
def test_hyena_lr_block_uses_the_fused_op(trainable, monkeypatch):
    """The block's triton backend (the fused op) against its reference backend: training (every parameter
    gradient, also through make_trainable's parametrised poles) and a chunked prefill through
    the block's state (sigma + featurizer tail, the same keys and values the reference path leaves)."""
    from evo2lite.kernels.modal import fused
    from evo2lite.train_params import make_trainable

    block = _lr_block(monkeypatch)
    if trainable:
        make_trainable(block, decay_len=64)
        assert type(block.filter).__name__ == "ParametrizedModalFilter"
    calls = []
    real = fused.modal_hyena_triton
    monkeypatch.setattr(fused, "modal_hyena_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = torch.randn(1, 13, 8, device=DEV)
    dy = torch.randn(1, 13, 8, device=DEV)
    out = {}
    for backend in ("reference", "triton"):
        block.backend = backend
        y = block(a)
        grads = torch.autograd.grad(y, list(block.parameters()), dy)
        with torch.no_grad():
            state = {}
            chunks = torch.cat([block(a[:, :6], state), block(a[:, 6:], state)], 1)
        assert state.keys() == {"featurizer_tail", "sigma"}
        out[backend] = (y, chunks, state["featurizer_tail"], state["sigma"], *grads)
    assert len(calls) == 3  # the training forward and both prefill chunks ran fused
    for got, want in zip(out["triton"], out["reference"]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@gpu
def test_gpu_default_tiling_and_bf16():
    # the default tiling over several chunks (the last partial) and a partial channel tile; then bf16 by the
    # 2x-PyTorch rule against the fp32 reference
    inputs = _inputs(2, 1999, 200, seed=3, state=True)
    ref32 = _run(*inputs, "reference")
    _check(_run(*inputs, "triton"), ref32, 3e-5)
    got, ref16 = _run(*inputs, "triton", torch.bfloat16), _run(*inputs, "reference", torch.bfloat16)
    for name, a, b, r in zip(NAMES, got, ref16, ref32):
        assert torch.isfinite(a).all(), name
        scale = r.abs().max().item()
        assert (a - r).abs().max() <= 2 * (b - r).abs().max() + 1e-3 * scale, name


@gpu
def test_gpu_long_sequence():
    # 64K+ tokens: error against the FFT reference stays at fp32 rounding
    inputs = _inputs(1, 65536 + 77, 64, seed=5, state=True)
    _check(_run(*inputs, "triton"), _run(*inputs, "reference"), 3e-5)


@pytest.mark.slow
@pytest.mark.skipif(CUDA, reason="on a GPU the other tests compile the kernels for real")
def test_kernels_compile_for_hopper():
    """The interpreter checks no types: compile the fused kernels of the default tiling for sm_90 (no GPU
    needed), in a fresh process (under TRITON_INTERPRET the kernels are interpreter objects)."""
    import subprocess
    import sys

    pytest.importorskip("triton")
    from triton.backends import backends

    if "nvidia" not in backends:
        pytest.skip("triton has no NVIDIA backend here")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    done = subprocess.run([sys.executable, "-c", "import test_modal_fused as t; t._compile_all()"],
                          cwd=os.path.dirname(__file__), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _compile_all():
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from evo2lite.kernels.modal import fused, triton as mt

    cfg = mt.CONFIG
    f32, i32, c, z = "*fp32", "i32", "constexpr", "*bf16"
    tiling = {"T": cfg["T"], "CH": cfg["CH"], "BD": cfg["BD"]}

    def build(fn, sig, **consts):
        sig = {**sig, **{k: c for k in consts}}
        src = ASTSource(fn=fn, signature=sig, constexprs={**consts, **tiling})
        triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": cfg["num_warps"]})

    base = dict(z_ptr=z, tail_ptr=z, w_ptr=f32)
    n3 = dict(L=i32, D=i32, N=i32, T=c, CH=c, BD=c)
    # the prefill variants carry a tail; training's (with tau, and the backward) do not
    build(fused._lr_state, {**base, "lam_ptr": f32, "sig_ptr": f32, "tau_ptr": f32, **n3},
          HAS_TAIL=True, WITH_TAU=True)
    build(fused._lr_out, {**base, "y_ptr": z, "lam_ptr": f32, "r_ptr": f32, "skip_ptr": f32, "sin_ptr": f32,
                          **n3}, HAS_TAIL=True)
    build(fused._lr_grad, {**base, "dy_ptr": z, "lam_ptr": f32, "r_ptr": f32, "skip_ptr": f32, "sin_ptr": f32,
                           "tin_ptr": f32, "dzf_ptr": z, "ds_ptr": f32, "gr_ptr": f32, "gl_ptr": f32,
                           "gd_ptr": f32, **n3}, HAS_TAIL=False)
    build(fused._lr_kv_grad, {**base, "du_ptr": f32, "dzf_ptr": z, "L": i32, "D": i32, "T": c, "CH": c, "BD": c},
          HAS_TAIL=False)
