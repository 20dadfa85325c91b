"""Self-test of tests/vtx_harness.py: random Evo-2-shaped vtx models, the official checkpoint format and
vortex's own load_checkpoint path, on CPU. Skipped when vtx (import name ``vortex``) is not installed."""

import io
import logging
import os
import sys

import pytest
import torch

pytest.importorskip("vortex")

from vtx_harness import (  # noqa: E402
    _ROTARY_MODULE,
    _apply_rotary_torch,
    _real_cuda_device,
    bf16_round_like_official,
    build_random_vtx_model,
    import_vtx,
    load_vtx_from_official,
    make_vtx_config,
    read_yaml_config,
    save_official_checkpoint,
    set_vtx_precision,
    vtx_generate_greedy,
    vtx_logits,
    wqkv_runtime_to_stored,
    wqkv_stored_to_runtime,
    write_yaml_config,
)

# name -> (make_vtx_config args, kwargs, build kwargs, save kwargs)
CASES = {
    # the spec section 8 shape: D=64, 4 heads of 16, G=4
    "smlasml_d64": (("SMLASML", 64, 4, 4, 176), {}, {}, {}),
    # D not a power of two, head size 32, rotary position interpolation /32 (like evo2_7b_262k)
    "interp32_d96": (("SMLAL", 96, 3, 6, 256), {"rotary_scale": 32}, {}, {}),
    # attention first (block 0 MLP is GELU), hd = 128, MR groups != SE groups, config base 1e6 but the
    # checkpoint's inv_freq is for base 1e4 (vortex must use the buffer), minimal file without extras
    "attn_first_hd128": (
        ("ASMLA", 128, 1, 8, 352),
        {"rotary_base": 1e6, "hcm_groups": 4},
        {"inv_freq_base": 1e4},
        {"unembed_duplicate": False, "te_extra_state": False},
    ),
}
L = 200
FP32_FLOAT_PARAMS = ("log_poles", "residues", "inv_freq")


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    args, kwargs, build_kw, save_kw = CASES[request.param]
    cfg = make_vtx_config(*args, **kwargs)
    rand = build_random_vtx_model(cfg, seed=7, bf16_exact=True, **build_kw)
    path = tmp_path_factory.mktemp(request.param) / "model.pt"
    saved = save_official_checkpoint(rand, path, **save_kw)
    loaded = load_vtx_from_official(path, cfg)
    # snapshot of the state load_checkpoint left (later tests switch the shared model's precision)
    loaded_sd = {k: v.clone() for k, v in loaded.state_dict().items()}
    ids = torch.randint(0, 256, (2, L), generator=torch.Generator().manual_seed(3))
    return dict(name=request.param, cfg=cfg, rand=rand, path=path, saved=saved, save_kw=save_kw,
                loaded=loaded, loaded_sd=loaded_sd, ids=ids)


def _loaded_fp32_logits(case):
    if "logits32" not in case:
        case["logits32"] = vtx_logits(case["loaded"], case["ids"], "float32")
    return case["logits32"]


def _torch_load_official(path):
    torch.serialization.add_safe_globals([io.BytesIO])
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def test_file_format(case):
    cfg, rand = case["cfg"], case["rand"]
    sd = _torch_load_official(case["path"])
    assert isinstance(sd, dict)
    rand_sd = rand.state_dict()
    extras = set(sd) - set(rand_sd)
    want_extras = set()
    if case["save_kw"].get("unembed_duplicate", True):
        want_extras.add("unembed.weight")
    if case["save_kw"].get("te_extra_state", True):
        want_extras |= {f"blocks.{i}.projections._extra_state" for i in cfg["hcs_layer_idxs"] + cfg["hcm_layer_idxs"]
                        + cfg["hcl_layer_idxs"]}
    assert extras == want_extras
    assert set(rand_sd) <= set(sd)
    for k, v in sd.items():
        if k.endswith("_extra_state"):
            assert isinstance(v, io.BytesIO)
            assert isinstance(torch.load(io.BytesIO(v.getvalue()), weights_only=True), dict)
            continue
        want = torch.float32 if any(s in k for s in FP32_FLOAT_PARAMS) else torch.bfloat16
        assert v.dtype == want, k
    for i in cfg["hcl_layer_idxs"]:
        lp = sd[f"blocks.{i}.filter.log_poles"]
        assert lp.shape == (cfg["hidden_size"], cfg["state_size"], 1)
        assert (lp < 0).all() and lp.min() > -3 and lp.max() < -5e-4
    for i in cfg["attn_layer_idxs"]:
        k = f"blocks.{i}.inner_mha_cls.Wqkv.weight"
        H = cfg["num_attention_heads"]
        assert torch.equal(sd[k].float(), wqkv_runtime_to_stored(rand_sd[k], H))
        assert torch.equal(wqkv_stored_to_runtime(sd[k].float(), H), rand_sd[k])
        inv = sd[f"blocks.{i}.inner_mha_cls.rotary_emb.inv_freq"]
        assert inv.shape == (cfg["hidden_size"] // H // 2,)


def test_load_checkpoint_reproduces_random_model(case):
    rand_sd, loaded, loaded_sd = case["rand"].state_dict(), case["loaded"], case["loaded_sd"]
    assert set(loaded_sd) == set(rand_sd)
    for k, v in loaded_sd.items():
        assert torch.equal(v.float(), bf16_round_like_official(k, rand_sd[k])), k
        want = torch.float32 if any(s in k for s in FP32_FLOAT_PARAMS) else torch.bfloat16
        assert v.dtype == want, k
    assert "Keys missing" not in loaded.vtx_load_log


def test_forward_fp32_matches_random_model_and_is_finite(case):
    # rand was built bf16-exact, so the loaded model holds identical values: the same vortex code must give
    # identical logits. With H > 1 this also proves the stored Wqkv layout.
    a = vtx_logits(case["rand"], case["ids"], "float32")
    b = _loaded_fp32_logits(case)
    assert a.shape == (2, L, 512) and a.dtype == torch.float32
    assert torch.isfinite(b).all()
    assert 0.05 < b.std() < 20
    torch.testing.assert_close(b, a, rtol=0, atol=1e-5)


def test_vortex_uses_checkpoint_inv_freq_not_config_base(case):
    if case["name"] != "attn_first_hd128":
        return  # only this case stores an inv_freq that disagrees with its config's rotary_emb_base
    model, ids = case["loaded"], case["ids"][:1, :64]
    ref = vtx_logits(model, ids, "float32")
    ropes = [m for n, m in model.named_modules() if n.endswith("rotary_emb")]
    saved = [r.inv_freq.detach().clone() for r in ropes]
    hd = case["cfg"]["hidden_size"] // case["cfg"]["num_attention_heads"]
    try:
        for r in ropes:
            r.inv_freq.data = 1.0 / (1e6 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))  # config base
            r._cos_cached = None  # vortex caches cos/sin per (length, dtype), not per inv_freq
        assert (vtx_logits(model, ids, "float32") - ref).abs().max() > 1e-3
    finally:
        for r, v in zip(ropes, saved):
            r.inv_freq.data = v
            r._cos_cached = None


def test_precision_states(case):
    model = case["loaded"]
    official = {k: v.dtype for k, v in case["loaded_sd"].items()}
    set_vtx_precision(model, "float32")
    assert {v.dtype for v in model.state_dict().values()} == {torch.float32}
    x32 = _loaded_fp32_logits(case)
    x16 = vtx_logits(model, case["ids"], "bfloat16")
    assert {k: v.dtype for k, v in model.state_dict().items()} == official
    assert torch.isfinite(x16).all()
    assert (x16 - x32).abs().max() < 0.5
    assert (x16 - x32).abs().max() > 0  # bf16 really ran


def test_bf16_policy_equals_fresh_load(case):
    # bf16 state reached from a float()ed model == the state load_checkpoint leaves
    fresh = load_vtx_from_official(case["path"], case["cfg"])
    model = case["loaded"]
    set_vtx_precision(model, "float32")
    y_toggled = vtx_logits(model, case["ids"][:1, :64], "bfloat16")
    y_fresh = vtx_logits(fresh, case["ids"][:1, :64], "bfloat16")
    assert torch.equal(y_toggled, y_fresh)


def test_yaml_config_roundtrip(case, tmp_path):
    p = tmp_path / "cfg.yml"
    write_yaml_config(case["cfg"], p)
    assert read_yaml_config(p) == case["cfg"]
    m = load_vtx_from_official(case["path"], p)
    for k, v in m.state_dict().items():
        assert torch.equal(v, case["loaded_sd"][k]), k


def test_generate_greedy(case):
    model = case["loaded"]
    prompt = case["ids"][:1, :12]  # >= 6 tokens: avoids vtx's short-prompt step_fir bug (spec 6.2)
    toks, step_logits = vtx_generate_greedy(model, prompt, 5, dtype="float32", cached=True)
    assert toks.shape == (1, 5) and step_logits.shape == (1, 5, 512)
    assert torch.equal(toks, step_logits.argmax(-1))
    full = vtx_logits(model, torch.cat([prompt, toks], 1), "float32")
    torch.testing.assert_close(step_logits, full[:, 11:16], rtol=0, atol=1e-4)
    toks_u, logits_u = vtx_generate_greedy(model, prompt, 2, cached=False)
    assert torch.equal(toks_u, toks[:, :2])
    torch.testing.assert_close(logits_u, step_logits[:, :2], rtol=0, atol=1e-4)
    # switching precision after a decode must work (vortex caches the first decode's dtype)
    toks16, logits16 = vtx_generate_greedy(model, prompt, 2, dtype="bfloat16", cached=True)
    assert toks16.shape == (1, 2) and torch.isfinite(logits16).all()
    assert (logits16 - step_logits[:, :2]).abs().max() < 0.5


def test_resave_of_loaded_model_roundtrips(case, tmp_path):
    # save_official_checkpoint takes a runtime-layout model, so a vortex-loaded model re-saves correctly
    # (re-saving vortex's raw state_dict would permute Wqkv twice; spec 4.3)
    p = tmp_path / "again.pt"
    save_official_checkpoint(case["loaded"], p)
    again = load_vtx_from_official(p, case["cfg"])
    for k, v in again.state_dict().items():
        assert torch.equal(v.float(), case["loaded_sd"][k].float()), k


def test_import_hygiene():
    vtx = import_vtx()
    assert torch.cuda.device is _real_cuda_device
    if not vtx.imported_here:
        pytest.skip("vortex was imported before the harness in this session")
    assert _ROTARY_MODULE not in sys.modules
    assert vtx.rotary.apply_rotary is _apply_rotary_torch
    fh = vtx.logging.activations_file_handler
    assert fh not in logging.getLogger().handlers
    assert os.path.dirname(fh.baseFilename) != os.getcwd()
    assert not os.path.exists(fh.baseFilename)


def test_rotary_shim_matches_vortex_torch_reference():
    vtx = import_vtx()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 10, 3, 32, generator=g)
    cos, sin = torch.randn(24, 16, generator=g), torch.randn(24, 16, generator=g)
    for interleaved in (False, True):
        ref = vtx.rotary.apply_rotary_emb_torch(x, cos[5:15], sin[5:15], interleaved=interleaved)
        out = _apply_rotary_torch(x, cos, sin, seqlen_offsets=5, interleaved=interleaved)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        per_b = _apply_rotary_torch(x, cos, sin, seqlen_offsets=torch.tensor([5, 5]), interleaved=interleaved)
        torch.testing.assert_close(per_b, ref, rtol=0, atol=1e-6)
    y = x.clone()
    assert _apply_rotary_torch(y, cos, sin, inplace=True) is y
    torch.testing.assert_close(y, vtx.rotary.apply_rotary_emb_torch(x, cos[:10], sin[:10]), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "args",
    [("SMXA", 64, 4, 4, 176), ("", 64, 4, 4, 176), ("SMLA", 64, 3, 4, 176), ("SMLA", 60, 4, 4, 176),
     ("SMLA", 64, 4, 3, 176)],
)
def test_make_vtx_config_rejects(args):
    with pytest.raises(ValueError):
        make_vtx_config(*args)


def test_make_vtx_config_fields():
    cfg = make_vtx_config("SMLASMLSMLA", 96, 3, 6, 256, rotary_scale=128, rotary_base=1e6)
    assert cfg["hcs_layer_idxs"] == [0, 4, 7] and cfg["hcm_layer_idxs"] == [1, 5, 8]
    assert cfg["hcl_layer_idxs"] == [2, 6, 9] and cfg["attn_layer_idxs"] == [3, 10]
    assert cfg["num_layers"] == 11 and cfg["num_filters"] == 96 and cfg["hcl_filter_groups"] == 96
    assert cfg["use_interpolated_rotary_pos_emb"] is True and cfg["rotary_emb_scaling_factor"] == 128
    assert cfg["use_flash_attn"] is False and cfg["use_fp8_input_projections"] is False
    assert cfg["interleave"] and cfg["column_split"] and not cfg["column_split_hyena"]
    assert cfg["evo2_style_activations"] and cfg["tie_embeddings"]
