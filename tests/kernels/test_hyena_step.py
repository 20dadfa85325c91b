"""The fused one-token Hyena step (kernels/hyena/step_triton.py) against `hyena_step_ref`: kinds S, M, L, several
steps in a row with the state carried in place, B 1 and 3, D not a multiple of the channel block, fp32 and
bf16 (the project's rule), outputs NaN-poisoned first. On the CPU the kernel runs in Triton's interpreter
(tests/kernels/conftest.py); the Evo 2 7B width needs CUDA."""

import os

import pytest
import torch

from evo2lite.kernels.hyena.step import hyena_step, hyena_step_ref

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA and os.environ.get("TRITON_INTERPRET") != "1",
                                reason="needs CUDA or the Triton interpreter")
gpu = pytest.mark.skipif(not CUDA, reason="needs CUDA")
DEV = "cuda" if CUDA else "cpu"


def _block(kind, B, D, K, S, seed):
    """Random fp32 taps and initial state of one block, as the decoder lays them out (contiguous, fp32 taps)."""
    gen = torch.Generator().manual_seed(seed)
    prm = {"featurizer_FC": torch.randn(3, 3 * D, generator=gen) * 0.5}
    state = {"featurizer_tail_BFC": torch.randn(B, 2, 3 * D, generator=gen)}
    if kind == "L":
        prm["poles_DS"] = torch.rand(D, S, generator=gen) * 0.5 + 0.45  # exp(log_poles): in (0, 1)
        prm["residues_DS"] = torch.randn(D, S, generator=gen) / S ** 0.5
        prm["skip_D"] = torch.randn(D, generator=gen)
        state["sigma_BDS"] = torch.randn(B, D, S, generator=gen)
    else:
        prm["filter_KD"] = torch.randn(K, D, generator=gen) / K ** 0.5
        state["filter_tail_BKD"] = torch.randn(B, K - 1, D, generator=gen)
        if kind == "M":
            prm["skip_D"] = torch.randn(D, generator=gen)
    zs = [torch.randn(B, 3 * D, generator=gen) for _ in range(4)]
    return prm, state, zs


def _run(kind, prm, state, zs, dtype, backend):
    """Feed the tokens zs one step at a time; returns the outputs and the final state, in fp32."""
    prm = {k: t.to(DEV) for k, t in prm.items()}
    st = {k: t.to(DEV, torch.float32 if k == "sigma_BDS" else dtype, copy=True) for k, t in state.items()}
    fn = hyena_step_ref if backend == "ref" else lambda *a, **kw: hyena_step(*a, **kw, backend=backend)
    ys = []
    for z in zs:
        y = fn(z.to(DEV, dtype), st["featurizer_tail_BFC"], prm["featurizer_FC"], kind=kind,
               **{k: v for k, v in {**prm, **st}.items() if k not in ("featurizer_FC", "featurizer_tail_BFC")})
        assert y.dtype == dtype and y.shape == zs[0][:, ::3].shape
        ys.append(y.float())
    return [torch.stack(ys)] + [st[k].float() for k in sorted(st)]


def _check(got, want, rtol):
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.isfinite(a).all(), f"output {i} has NaN/inf (unwritten output?)"
        err = (a - b).abs().max().item()
        assert err <= rtol * b.abs().max().item(), f"output {i}: max error {err:.3g} vs scale {b.abs().max():.3g}"


# (kind, B, D, K): D 40 and 70 are not multiples of the 32-channel block; MR's 128 taps and a short MR filter
CASES = [("S", 1, 40, 7), ("S", 3, 70, 7), ("M", 1, 40, 128), ("M", 3, 70, 20), ("L", 1, 40, 0), ("L", 3, 70, 0)]


@pytest.mark.parametrize("kind,B,D,K", CASES)
def test_fp32_matches_reference(kind, B, D, K):
    prm, state, zs = _block(kind, B, D, K, 16, seed=B * D + K)
    _check(_run(kind, prm, state, zs, torch.float32, "triton"), _run(kind, prm, state, zs, torch.float32, "ref"), 1e-5)


# Triton's interpreter truncates fp32 -> bf16 casts (the GPU rounds to nearest even), so on the CPU the
# low-precision rule is checked in fp16 (numpy rounds those casts correctly); bf16 itself needs CUDA
LOW = [torch.float16, pytest.param(torch.bfloat16, marks=gpu)]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("kind,B,D,K", [("S", 3, 70, 7), ("M", 1, 40, 128), ("L", 3, 70, 0)])
def test_low_precision_within_twice_torch_error(kind, B, D, K, dtype):
    # at most 2x plain PyTorch's own error at that dtype against the fp32 reference, plus a small floor
    prm, state, zs = _block(kind, B, D, K, 16, seed=B + D + K)
    ref32 = _run(kind, prm, state, zs, torch.float32, "ref")
    got, ref16 = _run(kind, prm, state, zs, dtype, "triton"), _run(kind, prm, state, zs, dtype, "ref")
    for i, (a, b, r) in enumerate(zip(got, ref16, ref32)):
        assert torch.isfinite(a).all(), i
        assert (a - r).abs().max() <= 2 * (b - r).abs().max() + 1e-3 * r.abs().max(), i


def test_auto_is_reference_on_cpu_and_bad_input_raises():
    prm, state, zs = _block("S", 1, 8, 7, 16, seed=0)
    if not CUDA:  # the dispatch: no CUDA tensor, no kernel, even under the interpreter
        _check(_run("S", prm, state, zs, torch.float32, "auto"), _run("S", prm, state, zs, torch.float32, "ref"), 0)
    z = zs[0]
    with pytest.raises(ValueError, match="kind"):
        hyena_step(z, state["featurizer_tail_BFC"], prm["featurizer_FC"], kind="X")
    with pytest.raises(ValueError, match="filter tail"):
        hyena_step(z, state["featurizer_tail_BFC"], prm["featurizer_FC"], kind="S")
    with pytest.raises(ValueError, match="contiguous"):
        hyena_step(z, state["featurizer_tail_BFC"], prm["featurizer_FC"], kind="S", backend="triton",
                   filter_tail_BKD=state["filter_tail_BKD"], filter_KD=prm["filter_KD"].t().contiguous().t())


@gpu
@pytest.mark.parametrize("kind", ["S", "M", "L"])
def test_gpu_7b_width(kind):
    # the Evo 2 7B width, 2 rows: fp32 to 1e-5 and the bf16 rule, 4 steps
    K = {"S": 7, "M": 128, "L": 0}[kind]
    prm, state, zs = _block(kind, 2, 4096, K, 16, seed=K)
    ref32 = _run(kind, prm, state, zs, torch.float32, "ref")
    _check(_run(kind, prm, state, zs, torch.float32, "triton"), ref32, 1e-5)
    got, ref16 = _run(kind, prm, state, zs, torch.bfloat16, "triton"), _run(kind, prm, state, zs, torch.bfloat16, "ref")
    for i, (a, b, r) in enumerate(zip(got, ref16, ref32)):
        assert torch.isfinite(a).all(), i
        assert (a - r).abs().max() <= 2 * (b - r).abs().max() + 1e-3 * r.abs().max(), i


@pytest.mark.parametrize("preset", ["debug", "debug_odd"])  # D 64 and 48 (not a multiple of the block)
def test_decoder_with_the_kernel_equals_the_full_forward(preset):
    from evo2lite.config import PRESETS
    from evo2lite.inference import Decoder, prefill
    from evo2lite.model import StripedHyena2, init_weights_

    model = init_weights_(StripedHyena2(PRESETS[preset]), 3).eval().to(DEV)
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(3)).to(DEV)
    with torch.inference_mode():
        full = model(ids).float()
    _, state = prefill(model, ids[:, :12])
    ref = Decoder(model, state.clone(), capacity=16, cuda_graph=False, step_backend="reference")
    fused = Decoder(model, state, capacity=16, cuda_graph=CUDA, step_backend="triton")
    for t in range(12, 16):
        a, b = fused.step(ids[:, t]).float(), ref.step(ids[:, t]).float()
        scale = full[:, t].abs().max()
        assert (a - b).abs().max() <= 1e-5 * scale and (a - full[:, t]).abs().max() <= 1e-4 * scale, t
    for x, y in zip(fused.to_state().layers, ref.to_state().layers):
        for k in x:
            if k in ("featurizer_tail", "filter_tail", "sigma"):
                assert (x[k] - y[k]).abs().max() <= 1e-5 * y[k].abs().max(), k


def test_decoder_rejects_an_unknown_step_backend():
    from evo2lite.config import PRESETS
    from evo2lite.inference import Decoder, prefill
    from evo2lite.model import StripedHyena2, init_weights_

    model = init_weights_(StripedHyena2(PRESETS["debug"]), 0).eval()
    _, state = prefill(model, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="step_backend"):
        Decoder(model, state, capacity=8, cuda_graph=False, step_backend="fused")
