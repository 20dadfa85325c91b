"""evo2lite against the official inference engine vtx (import name vortex), on CPU.

Random tiny Evo-2-shaped models are built with vortex, written in the official checkpoint format, loaded
by vortex's own load_checkpoint and by evo2lite's importer, and run by both.

Tolerances (METHOD.md "Correct first", DESIGN.md): fp32 max |delta logit| <= 1e-4 x the logit scale
(max |logit|); bf16 by the flash-attention rule against the fp32 reference: ours_bf16's relative error
<= 2 x vtx_bf16's own relative error + a floor of 1e-3.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

pytest.importorskip("vortex")

import vtx_harness as H  # noqa: E402
from evo2lite.checkpoint import key_map, load_model  # noqa: E402
from evo2lite.config import ModelConfig  # noqa: E402

FP32_MAX_REL = 1e-4
BF16_FLOOR = 1e-3

# name -> (make_vtx_config args, kwargs, build kwargs)
CASES = {
    # every block kind, D = 64, 4 heads of 16
    "smlasml_d64": (("SMLASML", 64, 4, 4, 176), {}, {}),
    # D = 96 (not a power of two), head 32, rotary position interpolation /32 (like evo2_7b_262k)
    "smlal_d96_interp32": (("SMLAL", 96, 3, 6, 160), {"rotary_scale": 32.0}, {}),
    # block 0 is attention (its MLP keeps GELU), D = 48, head 24, MR groups != SE groups, interpolation /128,
    # config rotary base 1e6 but the checkpoint's inv_freq buffer is for base 1e4: the buffer wins
    "alms_d48_attn_first": (("ALMS", 48, 2, 3, 96), {"hcm_groups": 6, "rotary_scale": 128.0, "rotary_base": 1e6},
                            {"inv_freq_base": 1e4}),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    args, kwargs, build_kw = CASES[request.param]
    vcfg = H.make_vtx_config(*args, **kwargs)
    directory = tmp_path_factory.mktemp(request.param)
    pt, yml = directory / "model.pt", directory / "model.yml"
    H.write_yaml_config(vcfg, yml)
    with contextlib.redirect_stderr(io.StringIO()):  # vortex's progress bars
        random_model = H.build_random_vtx_model(vcfg, seed=11, **build_kw)
        H.save_official_checkpoint(random_model, pt)
        vtx_model = H.load_vtx_from_official(pt, yml)
    gen = torch.Generator().manual_seed(5)
    ids = {"long": torch.randint(0, 256, (2, 200), generator=gen),   # L > 128: full MR filter
           "short": torch.randint(0, 256, (1, 37), generator=gen)}   # L < 128: MR filter truncated
    ref32 = {k: H.vtx_logits(vtx_model, v, "float32") for k, v in ids.items()}
    ref16 = {k: H.vtx_logits(vtx_model, v, "bfloat16") for k, v in ids.items()}  # leaves vtx in bf16
    return dict(name=request.param, vcfg=vcfg, pt=pt, yml=yml, vtx=vtx_model, ids=ids, ref32=ref32, ref16=ref16)


def test_imported_weights_equal_what_vortex_loaded(case):
    ours = load_model(case["pt"], config=case["yml"], dtype="bfloat16").state_dict()
    theirs = case["vtx"].state_dict()  # the post-load precision state (bf16 bulk, fp32 poles/inv_freq)
    for our_name, vtx_name in key_map(ModelConfig.from_vortex_yaml(case["yml"])).items():
        mine, ref = ours[our_name], theirs[vtx_name].reshape(ours[our_name].shape)
        assert mine.dtype == ref.dtype, our_name
        assert torch.equal(mine, ref), our_name


def test_parameter_count_equals_vortex_modules(case):
    cfg = ModelConfig.from_vortex_yaml(case["yml"])
    assert sum(p.numel() for p in case["vtx"].parameters()) == cfg.num_params()


@pytest.mark.parametrize("length", ["long", "short"])
def test_fp32_logits_match_vtx(case, length):
    model = load_model(case["pt"], config=case["yml"], dtype="float32")
    with torch.inference_mode():
        out = model(case["ids"][length]).float()
    ref = case["ref32"][length]
    assert out.shape == ref.shape and torch.isfinite(out).all()
    scale = ref.abs().max().item()
    delta = (out - ref).abs().max().item()
    assert delta <= FP32_MAX_REL * scale, f"{case['name']}: max |delta| {delta:.3g} at logit scale {scale:.3g}"


@pytest.mark.parametrize("length", ["long", "short"])
def test_bf16_logits_within_twice_vtx_bf16_error(case, length):
    model = load_model(case["pt"], config=case["yml"], dtype="bfloat16")
    with torch.inference_mode():
        out = model(case["ids"][length])
    assert out.dtype == torch.bfloat16
    out = out.float()
    ref32, ref16 = case["ref32"][length], case["ref16"][length]
    assert torch.isfinite(out).all()
    ours_err = ((out - ref32).norm() / ref32.norm()).item()
    vtx_err = ((ref16 - ref32).norm() / ref32.norm()).item()
    assert ours_err <= 2 * vtx_err + BF16_FLOOR, f"{case['name']}: ours {ours_err:.4f}, vtx bf16 {vtx_err:.4f}"
