"""FP8 input projections: each Transformer Engine rule evo2lite reproduces (evo2lite/fp8.py docstring) is
pinned here against a hand computation, on CPU; the Hopper path is compared on a GPU by
benchmarks/checkpoint_scale.py."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from evo2lite import fp8 as F8
from evo2lite.fp8 import (AMAX_HISTORY_LEN, E4M3_MAX, DelayedScaling, Fp8Linear, amax_and_scale_update,
                          choose_fp8, pad_rows, quantize_e4m3)
from evo2lite.config import PRESETS
from evo2lite.errors import Evo2LiteError


def test_amax_history_roll_and_scale_rule():
    history = torch.arange(1, 1 + AMAX_HISTORY_LEN * 3, dtype=torch.float32).view(AMAX_HISTORY_LEN, 3)
    history[0] = torch.tensor([500.0, 2.0, 0.0])  # row 0: the amax just recorded
    history[:, 2] = 0  # slot 2 never saw a value: keeps its old scale
    scale = torch.tensor([1.0, 1.0, 7.0])
    new_history, new_scale, new_inv = amax_and_scale_update(history.clone(), scale)
    # roll by one: row i <- row i+1, the last row <- the old row 0, then row 0 <- 0
    assert torch.equal(new_history[0], torch.zeros(3))
    assert torch.equal(new_history[1:-1], history[2:])
    assert torch.equal(new_history[-1], history[0])
    # scale = fp8_max / amax / 2^margin with amax = max over the whole (pre-roll) history
    amax = history.max(0).values
    assert new_scale[0] == E4M3_MAX / 500.0 and new_scale[1] == E4M3_MAX / amax[1]
    assert new_scale[2] == 7.0  # amax 0: the old scale stays
    assert torch.equal(new_inv, 1.0 / new_scale)
    _, with_margin, _ = amax_and_scale_update(history.clone(), scale, margin=2.0)
    assert with_margin[0] == E4M3_MAX / 500.0 / 4
    bad = history.clone()
    bad[3, 0] = float("inf")
    assert amax_and_scale_update(bad, scale)[1][0] == 1.0  # a non-finite amax keeps the old scale


def test_e4m3_cast_saturates_and_rounds_to_nearest_even():
    x = torch.tensor([17.0, 19.0, 1000.0, -1000.0, 0.1, 448.0])
    q = quantize_e4m3(x, torch.tensor(1.0))
    assert q.dtype == torch.float8_e4m3fn  # HYBRID: the forward operands are E4M3
    # 16 and 18 are neighbours (3 mantissa bits): 17 ties to the even mantissa (16), 19 to 20
    assert q.float().tolist()[:4] == [16.0, 20.0, 448.0, -448.0]  # saturated, not NaN
    assert torch.equal(quantize_e4m3(x, torch.tensor(2.0)).float()[:2], torch.tensor([32.0, 40.0]))


def test_padding_to_16_rows():
    x = torch.randn(5, 8)
    p = pad_rows(x)
    assert p.shape == (16, 8) and torch.equal(p[:5], x) and not p[5:].any()
    assert pad_rows(torch.randn(32, 8)).shape == (32, 8)


def _linear(seed=0, d=32, c=96):
    lin = nn.Linear(d, c, bias=False)
    lin.weight.data = torch.randn(c, d, generator=torch.Generator().manual_seed(seed)) * 0.05
    return lin


def test_linear_quantises_both_operands_e4m3_with_padded_rows(monkeypatch):
    seen = {}

    def spy(q_NK, w_CK, sx, sw, backend):
        seen.update(q=q_NK, w=w_CK)
        return F8.fp8_gemm_ref(q_NK, w_CK, sx, sw)

    monkeypatch.setattr(F8, "fp8_gemm", spy)
    layer = Fp8Linear(_linear(), DelayedScaling.fresh(), "emulate")
    y = layer(torch.randn(1, 5, 32))
    assert y.shape == (1, 5, 96)
    assert seen["q"].dtype == seen["w"].dtype == torch.float8_e4m3fn
    assert seen["q"].shape == (16, 32)  # 5 rows padded to 16


def test_delayed_scaling_first_call_uses_the_loaded_scales():
    lin = _linear()
    history = torch.zeros(AMAX_HISTORY_LEN, 3)
    history[5] = torch.tensor([2.0, 0.5, 0.0])
    loaded = DelayedScaling(torch.tensor([100.0, 300.0, 1.0]), torch.tensor([0.01, 1 / 300, 1.0]), history)
    layer = Fp8Linear(lin, loaded, "emulate")
    x = torch.randn(3, 32) * 3
    y1 = layer(x)
    # call 1 quantised with the loaded scales
    q = quantize_e4m3(x, torch.tensor(100.0)).float()
    w = quantize_e4m3(lin.weight, torch.tensor(300.0)).float()
    want1 = ((q @ w.t()) * (torch.tensor(0.01) * torch.tensor(1 / 300))).to(torch.bfloat16)
    assert torch.equal(y1, want1.to(y1.dtype))
    # after it: amax over (this call's amax, the loaded history), history rolled
    amax_x = max(x.abs().max().item(), 2.0)
    amax_w = max(lin.weight.abs().max().item(), 0.5)
    assert layer.scaling.scale[0].item() == pytest.approx(448.0 / amax_x, rel=1e-7)
    assert layer.scaling.scale[1].item() == pytest.approx(448.0 / amax_w, rel=1e-7)
    assert layer.scaling.amax_history[-1, 0] == x.abs().max() and layer.scaling.amax_history[0].sum() == 0
    assert layer.scaling.amax_history[4, 0] == 2.0  # the loaded row 5 moved up by one


def test_emulated_gemm_matches_exact_dequantised_product():
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(64, 256, generator=gen), torch.randn(128, 256, generator=gen) * 0.02
    sx, sw = torch.tensor(448 / 4.5), torch.tensor(448 / 0.1)
    q, qw = quantize_e4m3(x, sx), quantize_e4m3(w, sw)
    got = F8.fp8_gemm_ref(q, qw, 1 / sx, 1 / sw).double()
    exact = (q.double() @ qw.double().t()) * (1 / sx.double()) * (1 / sw.double())
    # one bf16 rounding of an fp32 accumulation of exact products
    torch.testing.assert_close(got, exact, rtol=2 ** -8, atol=1e-6)
    # and the quantisation error against the bf16 product stays at E4M3's level (3 mantissa bits)
    rel = ((got - x.double() @ w.double().t()).norm() / (x.double() @ w.double().t()).norm()).item()
    assert rel < 0.06


def test_backend_choice_refuses_inexact_for_1b_20b_40b():
    cpu = torch.device("cpu")
    for name in ("evo2_1b_base", "evo2_20b", "evo2_40b", "evo2_40b_base"):
        with pytest.raises(Evo2LiteError, match="--allow-inexact"):
            choose_fp8(PRESETS[name], cpu)
        assert choose_fp8(PRESETS[name], cpu, allow_inexact=True) == "emulate"
        with pytest.raises(Evo2LiteError, match="--allow-inexact"):
            choose_fp8(PRESETS[name], cpu, "off")
    for name in ("evo2_7b", "evo2_7b_base", "evo2_7b_262k", "evo2_7b_microviridae"):
        assert choose_fp8(PRESETS[name], cpu) == "off"  # evo2's bf16 fallback for 7B
    assert choose_fp8(PRESETS["debug"], cpu) == "off"
    with pytest.raises(Evo2LiteError, match="Hopper"):
        choose_fp8(PRESETS["evo2_7b"], cpu, "scaled_mm")
    with pytest.raises(Evo2LiteError, match="--fp8"):
        choose_fp8(PRESETS["evo2_7b"], cpu, "fp4")


def test_model_with_emulated_fp8_projections_runs_and_stays_close():
    from evo2lite.loading import load_model

    ref = load_model("debug", random_init=True, seed=4, dtype="bfloat16")
    f8 = load_model("debug", random_init=True, seed=4, dtype="bfloat16", fp8="emulate")
    ids = torch.randint(65, 85, (1, 40))
    a, b = ref(ids).float(), f8(ids).float()
    assert isinstance(f8.blocks[0].mixer.in_proj, Fp8Linear) and not hasattr(f8.blocks[3].mixer, "in_proj")
    assert not torch.equal(a, b)  # FP8 really ran
    assert ((a - b).norm() / a.norm()).item() < 0.1
    assert f8.provenance["fp8"] == "emulate (inexact)" and f8.provenance["dtype"] == "bfloat16"


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
                    reason="torch._scaled_mm with Hopper's fast accumulation needs an sm_90 GPU")
def test_scaled_mm_close_to_emulation_on_hopper():
    gen = torch.Generator().manual_seed(2)
    x, w = torch.randn(256, 512, generator=gen), torch.randn(384, 512, generator=gen) * 0.02
    sx, sw = torch.tensor(448 / 4.5), torch.tensor(448 / 0.1)
    q, qw = quantize_e4m3(x, sx).cuda(), quantize_e4m3(w, sw).cuda()
    got = F8.fp8_gemm(q, qw, (1 / sx).cuda(), (1 / sw).cuda(), "scaled_mm").float().cpu()
    want = F8.fp8_gemm_ref(q.cpu(), qw.cpu(), 1 / sx, 1 / sw).float()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-3)


def test_scaled_mm_gets_aligned_scales_from_the_meta_vectors(monkeypatch):
    # the layer's scales are elements of TE's (3,) vectors (the weight's at a 4-byte offset); cuBLASLt
    # answers CUBLAS_STATUS_NOT_SUPPORTED to a scale pointer that is not 16-byte aligned (seen on the H200)
    seen = {}

    def scaled_mm(a, b, scale_a, scale_b, out_dtype, use_fast_accum):
        seen.update(a=scale_a, b=scale_b)
        return F8.fp8_gemm_ref(a, b.t(), scale_a, scale_b)

    monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
    scaling = DelayedScaling.fresh()
    scaling.scale_inv = torch.tensor([0.5, 0.25, 1.0])
    layer = Fp8Linear(_linear(), scaling, "scaled_mm")
    layer(torch.randn(1, 5, 32))
    for t in (seen["a"], seen["b"]):
        assert t.dim() == 0 and t.dtype == torch.float32 and t.data_ptr() % 16 == 0
    assert (seen["a"].item(), seen["b"].item()) == (0.5, 0.25)


@pytest.mark.skipif(not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
                    reason="torch._scaled_mm with Hopper's fast accumulation needs an sm_90 GPU")
def test_fp8_linear_on_hopper_matches_emulation():
    lin = _linear().cuda()
    x = torch.randn(3, 7, 32, device="cuda")
    got = Fp8Linear(lin, DelayedScaling.fresh("cuda"), "scaled_mm")(x).float()
    want = Fp8Linear(lin, DelayedScaling.fresh("cuda"), "emulate")(x).float()
    torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-3)


def test_scaling_state_survives_inference_mode_and_back():
    from evo2lite.loading import load_model

    model = load_model("debug", random_init=True, fp8="emulate")
    ids = torch.randint(65, 80, (1, 20))
    with torch.inference_mode():
        model(ids)
    with torch.no_grad():  # the state written under inference_mode must still be updatable here
        model(ids)
    scaling = model.blocks[0].mixer.in_proj.scaling
    assert not scaling.amax_history.is_inference() and (scaling.amax_history[-2:, :2] > 0).all()
