"""Checkpoints (spec §4): the official Evo 2 / vortex format <-> evo2lite's (model.safetensors + config.json).

Official files are written by tests/vtx_harness.py from a vortex model when vtx is installed (an
implementation independent of evo2lite's exporter); without vtx, by evo2lite's own exporter plus the
extras real files carry (unembed.weight, TE _extra_state), so the round trips still run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os

import pytest
import torch

import vtx_harness as H
from evo2lite import checkpoint as ckpt
from evo2lite.checkpoint import (convert, key_map, load_model, load_state, read_vortex_file, save_model,
                                 save_state, state_dict_from_vortex, state_dict_to_vortex)
from evo2lite.config import PRESETS, ModelConfig
from evo2lite.errors import CheckpointError, ConfigError, Evo2LiteError
from evo2lite.model import StripedHyena2, init_weights_

HAVE_VTX = H.vtx_available()
FP32_NAMES = ("log_poles", "residues", "inv_freq")


# (make_vtx_config args, kwargs)
SHAPES = {
    "smlasml": (("SMLASML", 64, 4, 4, 176), {}),
    # attention first, D not a power of two, head size 24, MR groups != SE groups, rotary interpolation
    "alms_odd": (("ALMS", 48, 2, 3, 96), {"hcm_groups": 6, "rotary_scale": 32.0, "rotary_base": 1e6}),
}


def write_official(directory, name="smlasml", *, seed=0, bulk_dtype=torch.bfloat16, extras=True,
                   model_name="vtx-harness-tiny"):
    """An official checkpoint X.pt + its YAML X.yml in `directory`; returns (pt, yml, raw dict saved)."""
    args, kwargs = SHAPES[name]
    vcfg = H.make_vtx_config(*args, **kwargs, model_name=model_name)
    pt, yml = directory / f"{name}.pt", directory / f"{name}.yml"
    H.write_yaml_config(vcfg, yml)
    if HAVE_VTX:
        with contextlib.redirect_stderr(io.StringIO()):  # vortex's progress bar while building blocks
            vmodel = H.build_random_vtx_model(vcfg, seed=seed, bf16_exact=True)
        raw = H.save_official_checkpoint(vmodel, pt, bulk_dtype=bulk_dtype, unembed_duplicate=extras,
                                         te_extra_state=extras)
        return pt, yml, raw
    cfg = ModelConfig.from_vortex_yaml(yml)
    raw = state_dict_to_vortex(init_weights_(StripedHyena2(cfg), seed).state_dict(), cfg)
    raw = {k: (v if k.endswith(FP32_NAMES) else v.to(bulk_dtype)) for k, v in raw.items()}
    if extras:
        raw["unembed.weight"] = raw["embedding_layer.weight"].clone()
        for i, kind in enumerate(cfg.layout):
            if kind != "A":
                buf = io.BytesIO()
                torch.save({"scale_fwd": torch.ones(3)}, buf)
                raw[f"blocks.{i}.projections._extra_state"] = buf
    torch.save(raw, pt)
    return pt, yml, raw


def assert_states_equal(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# --- round trips ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_official_import_export_import_is_bit_exact(tmp_path, shape, capsys):
    pt, yml, raw = write_official(tmp_path, shape)
    cfg0, state0, _ = load_state(pt, yml)
    assert capsys.readouterr().err == ""  # unembed.weight and _extra_state are expected: dropped silently

    ours = convert(pt, tmp_path / "ours", config=yml)
    assert sorted(os.listdir(ours)) == ["config.json", "model.safetensors"]
    cfg1, state1, _ = load_state(ours)
    assert cfg1 == cfg0
    assert_states_equal(state1, state0)
    # vtx's precision policy: bf16 bulk, fp32 poles/residues/inv_freq (spec §2.10)
    assert {k for k, v in state1.items() if v.dtype == torch.float32} == \
        {k for k in state1 if k.endswith(FP32_NAMES)}

    back = convert(ours, tmp_path / "back.pt", to="vortex")
    assert back.exists() and back.with_suffix(".yml").exists()
    raw_back = read_vortex_file(back)
    # the exported file holds exactly the model's tensors of the original file, bit for bit, in the
    # stored layouts (Wqkv per head, singleton filter dims)
    model_keys = {k for k in raw if not (k == "unembed.weight" or k.endswith("_extra_state"))}
    assert set(raw_back) == model_keys
    for k in model_keys:
        assert raw_back[k].dtype == raw[k].dtype and torch.equal(raw_back[k], raw[k]), k

    cfg2, state2, _ = load_state(back, back.with_suffix(".yml"))
    assert cfg2 == cfg0
    assert_states_equal(state2, state0)


def test_wqkv_rows_are_permuted_like_vortex(tmp_path):
    pt, yml, raw = write_official(tmp_path, "smlasml")
    cfg, state, _ = load_state(pt, yml)
    for i, kind in enumerate(cfg.layout):
        if kind == "A":
            stored = raw[f"blocks.{i}.inner_mha_cls.Wqkv.weight"]
            runtime = H.wqkv_stored_to_runtime(stored.float(), cfg.num_heads).to(stored.dtype)
            assert torch.equal(state[f"blocks.{i}.mixer.qkv_proj.weight"], runtime)


@pytest.mark.skipif(not HAVE_VTX, reason="vtx (import name vortex) is not installed")
def test_vortex_loads_our_export_to_the_same_weights(tmp_path):
    pt, yml, _ = write_official(tmp_path, "alms_odd")
    convert(pt, tmp_path / "back.pt", config=yml, to="vortex")
    with contextlib.redirect_stderr(io.StringIO()):
        original = H.load_vtx_from_official(pt, yml).state_dict()
        exported = H.load_vtx_from_official(tmp_path / "back.pt", tmp_path / "back.yml").state_dict()
    assert_states_equal(exported, original)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_save_model_load_model_round_trip(tmp_path, dtype):
    model = load_model("debug_odd", random_init=True, seed=5, dtype=dtype)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m", dtype=dtype)
    assert again.config == model.config
    assert_states_equal(again.state_dict(), model.state_dict())
    assert again.source == str(tmp_path / "m")
    # saving again over an existing directory replaces it
    save_model(again, tmp_path / "m")
    assert_states_equal(load_model(tmp_path / "m", dtype=dtype).state_dict(), model.state_dict())


def test_fp32_bulk_is_rounded_to_bf16_like_vtx(tmp_path):
    pt, yml, raw = write_official(tmp_path, "smlasml", bulk_dtype=torch.float32)
    _, state, _ = load_state(pt, yml)
    mapping = key_map(ModelConfig.from_vortex_yaml(yml))
    for ours, theirs in mapping.items():
        want = raw[theirs].reshape(state[ours].shape)
        if ours.endswith("qkv_proj.weight"):
            want = H.wqkv_stored_to_runtime(want, 4)
        want = want.float() if ours.endswith(FP32_NAMES) else want.to(torch.bfloat16)
        assert state[ours].dtype == want.dtype and torch.equal(state[ours], want), ours


# --- importer diagnostics ---------------------------------------------------------------------------------

def test_unexpected_extra_keys_warn_in_one_line(tmp_path, capsys):
    pt, yml, raw = write_official(tmp_path, "smlasml", extras=False)
    raw = dict(raw)
    raw["blocks.0.filter.short_filter_bias"] = torch.zeros(192)
    raw["mystery"] = torch.zeros(2)
    cfg = ModelConfig.from_vortex_yaml(yml)
    state_dict_from_vortex(raw, cfg, "x.pt")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert "warning" in err and "blocks.0.filter.short_filter_bias" in err and "mystery" in err


def test_unembed_that_differs_from_the_embedding_warns(tmp_path, capsys):
    pt, yml, raw = write_official(tmp_path, "smlasml")
    raw = dict(raw)
    raw["unembed.weight"] = raw["embedding_layer.weight"] + 1
    state_dict_from_vortex(raw, ModelConfig.from_vortex_yaml(yml), "x.pt")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "unembed.weight" in err


def test_missing_tensor_is_named(tmp_path):
    pt, yml, raw = write_official(tmp_path, "smlasml")
    raw = {k: v for k, v in raw.items() if k != "blocks.2.filter.residues"}
    with pytest.raises(CheckpointError, match=r"missing tensor 'blocks\.2\.filter\.residues'"):
        state_dict_from_vortex(raw, ModelConfig.from_vortex_yaml(yml), "x.pt")


def test_misshapen_tensor_is_named(tmp_path):
    pt, yml, raw = write_official(tmp_path, "smlasml")
    raw = dict(raw)
    raw["blocks.1.filter.h"] = torch.zeros(4, 1, 64, dtype=torch.bfloat16)  # MR filter of 64 taps
    with pytest.raises(CheckpointError, match=r"'blocks\.1\.filter\.h' has shape \(4, 1, 64\).*\(4, 1, 128\)"):
        state_dict_from_vortex(raw, ModelConfig.from_vortex_yaml(yml), "x.pt")
    raw["blocks.1.filter.h"] = "not a tensor"
    with pytest.raises(CheckpointError, match="not a tensor"):
        state_dict_from_vortex(raw, ModelConfig.from_vortex_yaml(yml), "x.pt")


def test_wrong_config_for_the_checkpoint(tmp_path):
    pt, _, _ = write_official(tmp_path, "smlasml")
    with pytest.raises(CheckpointError, match="shape"):
        load_state(pt, "debug")  # a preset of other widths
    with pytest.raises(CheckpointError, match="missing tensor"):
        load_state(pt, ModelConfig(layout="LLLLLLL", d_model=64, num_heads=4, d_mlp=176, num_se_groups=4,
                                   num_mr_groups=4))


def test_truncated_checkpoint(tmp_path):
    pt, yml, _ = write_official(tmp_path, "smlasml")
    data = pt.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_state(cut, yml)
    (tmp_path / "junk.pt").write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError):
        load_state(tmp_path / "junk.pt", yml)
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="dict"):
        load_state(tmp_path / "list.pt", yml)


def test_byte_shards_load_identically(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the shards are joined
    pt, yml, _ = write_official(tmp_path, "smlasml")
    _, whole, _ = load_state(pt, yml)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    data = pt.read_bytes()
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    for n in range(3):
        (shard_dir / f"model.pt.part{n}").write_bytes(data[cuts[n]: cuts[n + 1]])
    _, sharded, _ = load_state(shard_dir / "model.pt.part0", yml)
    assert_states_equal(sharded, whole)
    _, from_dir, _ = load_state(shard_dir, yml)  # a directory holding the shards
    assert_states_equal(from_dir, whole)
    assert list(scratch.glob("*.pt")) == []  # the joined file is removed again (Evo 2 40B: 82 GB)
    (shard_dir / "model.pt.part0").unlink()
    with pytest.raises(CheckpointError, match="part0"):
        load_state(shard_dir / "model.pt.part1", yml)


# --- model specs ------------------------------------------------------------------------------------------

def test_checkpoint_without_config_is_refused(tmp_path):
    pt, _, _ = write_official(tmp_path, "smlasml")
    with pytest.raises(ConfigError, match="--config"):
        load_state(pt)
    with pytest.raises(ConfigError, match="not found"):
        load_state(pt, tmp_path / "absent.yml")


def test_preset_without_weights_is_refused():
    with pytest.raises(ConfigError, match="preset"):
        load_model("debug")  # Evo 2 names are not refused: they resolve through the HF cache (test_loading)
    with pytest.raises(ConfigError, match="random_init"):
        load_model("no_such_preset", random_init=True)


def test_unknown_model_spec(tmp_path):
    with pytest.raises(Evo2LiteError, match="not found"):
        load_state(tmp_path / "nothing_here")
    (tmp_path / "weights.bin").write_bytes(b"1234")
    with pytest.raises(CheckpointError, match="unknown model format"):
        load_state(tmp_path / "weights.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not a model directory"):
        load_state(tmp_path / "empty")


def test_shipped_default_model_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt, "DEFAULT_MODEL_DIR", tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="default model"):
        load_state(None)
    model = load_model("debug", random_init=True)
    save_model(model, tmp_path / "shipped")
    monkeypatch.setattr(ckpt, "DEFAULT_MODEL_DIR", tmp_path / "shipped")
    assert load_model().config == PRESETS["debug"]


def test_broken_model_directories(tmp_path, capsys):
    model = load_model("debug", random_init=True)
    state = model.state_dict()
    save_state(model.config, state, tmp_path / "ok")

    (tmp_path / "ok" / "config.json").rename(tmp_path / "config.json.bak")
    with pytest.raises(CheckpointError, match="config.json"):
        load_state(tmp_path / "ok")
    (tmp_path / "config.json.bak").rename(tmp_path / "ok" / "config.json")

    weights = tmp_path / "ok" / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path / "ok")
    weights.write_bytes(good)

    save_state(model.config, {k: v for k, v in state.items() if k != "blocks.3.mixer.inv_freq"},
               tmp_path / "missing")
    with pytest.raises(CheckpointError, match=r"missing tensor 'blocks\.3\.mixer\.inv_freq'"):
        load_model(tmp_path / "missing")

    save_state(model.config, {**state, "blocks.0.mlp.l1.weight": torch.zeros(3, 3)}, tmp_path / "shape")
    with pytest.raises(CheckpointError, match=r"'blocks\.0\.mlp\.l1\.weight' has shape \(3, 3\)"):
        load_model(tmp_path / "shape")

    capsys.readouterr()
    save_state(model.config, {**state, "extra.weight": torch.zeros(2)}, tmp_path / "extra")
    load_model(tmp_path / "extra")
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "extra.weight" in err


def test_evo2_directory_with_its_tiny_config_json(tmp_path):
    """A local copy of an Evo 2 HF repo holds X.pt and a tiny config.json that is not evo2lite's (spec
    §4.1): the .pt is the checkpoint."""
    pt, yml, _ = write_official(tmp_path, "smlasml")
    repo = tmp_path / "evo2_local"
    repo.mkdir()
    os.link(pt, repo / "smlasml.pt")
    (repo / "config.json").write_text('{"model_type": "evo2"}\n')
    _, expected, _ = load_state(pt, yml)
    _, state, _ = load_state(repo, yml)
    assert_states_equal(state, expected)


@pytest.mark.parametrize("name, refused", [("shc-evo2-1b-8k-2T-v2", True), ("tiny-7B-test", False)])
def test_fp8_models_refuse_inexact_devices(tmp_path, capsys, name, refused):
    cfg = dataclasses.replace(PRESETS["debug"], fp8_input_projections=True, name=name)
    save_model(init_weights_(StripedHyena2(cfg)), tmp_path / "m")
    capsys.readouterr()
    if refused:  # 1B/20B/40B: no exact FP8 on a CPU
        with pytest.raises(Evo2LiteError, match="--allow-inexact") as info:
            load_model(tmp_path / "m")
        assert name in str(info.value) and "\n" not in str(info.value)
        model = load_model(tmp_path / "m", allow_inexact=True)
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "emulated" in err
        assert model.provenance["fp8"] == "emulate (inexact)"
    else:  # the 7B models run bf16 projections, as evo2 does without Transformer Engine
        model = load_model(tmp_path / "m")
        assert capsys.readouterr().err == ""
        assert model.provenance["fp8"] == "off"
    load_model("debug", random_init=True)  # no FP8 flag: never a warning
    assert capsys.readouterr().err == ""


def test_dtype_and_device_arguments():
    assert load_model("debug", random_init=True).dtype == torch.float32  # CPU default
    with pytest.raises(Evo2LiteError, match="dtype"):
        load_model("debug", random_init=True, dtype="float16")
    with pytest.raises(Evo2LiteError, match="device"):
        load_model("debug", random_init=True, device="tpu:7")
    if not torch.cuda.is_available():
        with pytest.raises(Evo2LiteError, match="cuda"):
            load_model("debug", random_init=True, device="cuda")


# --- hf:REPO, offline --------------------------------------------------------------------------------------

def test_hf_repo_with_an_official_checkpoint(tmp_path, hf_cache):
    pt, yml, _ = write_official(tmp_path, "smlasml")
    hf_cache("org/evo2-tiny", {"evo2-tiny.pt": pt, "config.json": '{"model_type": "evo2"}\n'})
    _, expected, _ = load_state(pt, yml)
    cfg, state, source = load_state("hf:org/evo2-tiny", yml)
    assert source == "hf:org/evo2-tiny"
    assert_states_equal(state, expected)
    model = load_model("hf:org/evo2-tiny", config=yml)
    assert model.source == "hf:org/evo2-tiny"


def test_hf_repo_with_byte_shards(tmp_path, hf_cache):
    pt, yml, _ = write_official(tmp_path, "smlasml")
    data = pt.read_bytes()
    hf_cache("org/evo2-sharded", {"m.pt.part0": data[:1000], "m.pt.part1": data[1000:]})
    _, expected, _ = load_state(pt, yml)
    assert_states_equal(load_state("hf:org/evo2-sharded", yml)[1], expected)


def test_hf_repo_in_our_format(tmp_path, hf_cache):
    model = load_model("debug_odd", random_init=True, seed=2)
    save_model(model, tmp_path / "ours")
    hf_cache("org/evo2lite-tiny", {"model.safetensors": tmp_path / "ours" / "model.safetensors",
                                   "config.json": tmp_path / "ours" / "config.json"})
    again = load_model("hf:org/evo2lite-tiny")
    assert again.config == model.config
    assert_states_equal(again.state_dict(), model.state_dict())


def test_hf_repo_not_in_the_cache(hf_cache):
    with pytest.raises(CheckpointError, match="hf:org/absent"):
        load_state("hf:org/absent")


def test_hf_repo_with_official_checkpoint_needs_a_config(tmp_path, hf_cache):
    pt, _, _ = write_official(tmp_path, "smlasml")
    hf_cache("org/evo2-noconfig", {"x.pt": pt})
    with pytest.raises(ConfigError, match="--config"):
        load_state("hf:org/evo2-noconfig")
