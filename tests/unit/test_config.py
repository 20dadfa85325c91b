"""ModelConfig: validation, serialisation, presets (exact parameter counts, spec §3) and the evo2/vortex
YAML reader."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from evo2lite.config import PRESETS, ModelConfig, get_preset
from evo2lite.errors import ConfigError
from evo2lite.model import StripedHyena2

TINY = dict(layout="SMLA", d_model=64, num_heads=4, d_mlp=128, num_se_groups=4, num_mr_groups=8)


# --- presets ---------------------------------------------------------------------------------------

# Spec §3: "params (my count from the vtx modules, tied embedding counted once)", given there to the
# precision of 1 M parameters; evo2_1b_base exactly.
SPEC_MILLIONS = {
    "evo2_1b_base": 1108,
    "evo2_7b_base": 6481,
    "evo2_7b": 6582,
    "evo2_20b": 19739,
    "evo2_40b_base": 40331,
    "evo2_40b": 41118,
}


def test_evo2_1b_base_exact_parameter_count():
    assert PRESETS["evo2_1b_base"].num_params() == 1_107_989_760


@pytest.mark.parametrize("name", sorted(SPEC_MILLIONS))
def test_preset_parameter_counts_match_spec(name):
    assert round(PRESETS[name].num_params() / 1e6) == SPEC_MILLIONS[name]


def test_7b_262k_has_the_7b_base_widths():
    # spec §3: the 262k model is the 1M config with the base MLP width (11008): same count as 7b_base
    assert PRESETS["evo2_7b_262k"].num_params() == PRESETS["evo2_7b_base"].num_params()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_num_params_equals_the_modules(name):
    cfg = PRESETS[name]
    with torch.device("meta"):
        model = StripedHyena2(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    # inv_freq is a buffer, not a parameter (spec §2.9); it must not be counted
    assert all(not n.endswith("inv_freq") for n, _ in model.named_parameters())


# Spec §1.1 and §3, field by field.
SPEC_SHAPES = {
    #                layers  D     H   G    I      rotary base  interp  context
    "evo2_1b_base": (25, 1920, 15, 128, 5120, 10000.0, 1.0, 8192),
    "evo2_7b_base": (32, 4096, 32, 256, 11008, 10000.0, 1.0, 8192),
    "evo2_7b": (32, 4096, 32, 256, 11264, 10000.0, 128.0, 1 << 20),
    "evo2_7b_262k": (32, 4096, 32, 256, 11008, 10000.0, 32.0, 262144),
    "evo2_20b": (24, 8192, 64, 512, 22528, 1e6, 128.0, 1 << 20),
    "evo2_40b_base": (50, 8192, 64, 512, 21888, 1e6, 1.0, 8192),
    "evo2_40b": (50, 8192, 64, 512, 22528, 1e6, 128.0, 1 << 20),
}
SPEC_ATTN = {25: [3, 10, 17, 24], 32: [3, 10, 17, 24, 31], 50: [3, 10, 17, 24, 31, 35, 42, 49], 24: [3, 10, 17]}


@pytest.mark.parametrize("name", sorted(SPEC_SHAPES))
def test_preset_shapes_match_spec(name):
    cfg = PRESETS[name]
    layers, d, h, g, i, base, interp, context = SPEC_SHAPES[name]
    assert (cfg.num_blocks, cfg.d_model, cfg.num_heads, cfg.num_se_groups, cfg.num_mr_groups, cfg.d_mlp) == \
        (layers, d, h, g, g, i)
    assert cfg.head_dim == 128
    assert (cfg.rotary_base, cfg.rotary_scale, cfg.context_len) == (base, interp, context)
    assert [k for k, c in enumerate(cfg.layout) if c == "A"] == SPEC_ATTN[layers]
    assert cfg.layout.startswith("SMLA")
    assert (cfg.featurizer_len, cfg.se_filter_len, cfg.mr_filter_len, cfg.state_size) == (3, 7, 128, 16)
    assert cfg.vocab_size == 512 and cfg.eps == 1e-6 and cfg.fp8_input_projections


def test_get_preset():
    assert get_preset("debug") is PRESETS["debug"]
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        get_preset("nope")


def test_debug_presets_cover_every_block_kind():
    assert set(PRESETS["debug"].layout) == set("SMLA")
    assert set(PRESETS["debug_odd"].layout) >= set("SMLA")


# --- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, field", [
    (dict(layout="SMXA"), "layout"),
    (dict(layout="smla"), "layout"),
    (dict(layout=""), "layout"),
    (dict(num_heads=3), "num_heads"),  # 3 does not divide 64
    (dict(d_model=60, num_heads=4, num_se_groups=4, num_mr_groups=4), "num_heads"),  # head size 15 is odd
    (dict(num_se_groups=5), "num_se_groups"),
    (dict(num_mr_groups=6), "num_mr_groups"),
    (dict(d_mlp=0), "d_mlp"),
    (dict(state_size=-1), "state_size"),
    (dict(vocab_size=200), "vocab_size"),
    (dict(eps=0.0), "eps"),
    (dict(rotary_scale=0.0), "rotary_scale"),
])
def test_invalid_config_raises_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**{**TINY, **changes})
    assert field in str(info.value)
    assert isinstance(info.value, ValueError)  # house style: ValueError subclasses for bad input


def test_config_is_frozen_and_keyword_only():
    cfg = ModelConfig(**TINY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.d_model = 32  # type: ignore[misc]
    with pytest.raises(TypeError):
        ModelConfig("SMLA", 64, 4, 128, 4, 8)  # type: ignore[misc]


def test_derived_sizes():
    cfg = ModelConfig(**TINY)
    assert cfg.num_blocks == 4 and cfg.head_dim == 16
    assert [cfg.block_kind(i) for i in range(4)] == ["hyena_se", "hyena_mr", "hyena_lr", "attention"]


# --- serialisation ---------------------------------------------------------------------------------

def test_dict_and_json_round_trip(tmp_path):
    cfg = dataclasses.replace(PRESETS["debug_odd"], name="x", fp8_input_projections=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "config.json")
    assert ModelConfig.load(tmp_path / "config.json") == cfg


def test_from_dict_rejects_unknown_and_missing_fields(tmp_path):
    with pytest.raises(ConfigError, match="colour"):
        ModelConfig.from_dict({**TINY, "colour": "blue"})
    with pytest.raises(ConfigError, match="d_mlp"):
        ModelConfig.from_dict({k: v for k, v in TINY.items() if k != "d_mlp"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        ModelConfig.load(tmp_path / "bad.json")


# --- evo2 / vortex YAML ----------------------------------------------------------------------------

# evo2's configs/evo2-1b-8k.yml as spec §1.1/§3 describe it, with its comments and the many keys
# evo2lite does not read.
EVO2_1B_YAML = """\
model_name: shc-evo2-1b-8k-2T-v2

vocab_size: 512
hidden_size: 1920
# Number of independent filters in Hyena-LI
num_filters: 1920
attn_layer_idxs: [3,10,17,24]
hcl_layer_idxs: [2,6,9,13,16,20,23]
hcm_layer_idxs: [1,5,8,12,15,19,22]
hcs_layer_idxs: [0,4,7,11,14,18,21]

hcm_filter_length: 128
hcl_filter_groups: 1920
hcm_filter_groups: 128
hcs_filter_groups: 128
hcs_filter_length: 7
num_layers: 25

short_filter_length: 3
num_attention_heads: 15
short_filter_bias: false # add bias to FIR
mlp_init_method: torch.nn.init.zeros_
mlp_output_init_method: torch.nn.init.zeros_
eps: 0.000001
state_size: 16
rotary_emb_base: 10000
make_vocab_size_divisible_by: 8
inner_size_multiple_of: 16  # force GLU inner_size to be a multiple of
inner_mlp_size: 5120
log_intermediate_values: False
proj_groups: 1
hyena_filter_groups: 1
column_split_hyena: False
column_split: True
interleave: True
evo2_style_activations: True
model_parallel_size: 1
pipe_parallel_size: 1
tie_embeddings: True
mha_out_proj_bias: True
hyena_out_proj_bias: True
hyena_flip_x1x2: False
qkv_proj_bias: False
use_fp8_input_projections: True
max_seqlen: 8192
max_batch_size: 1
final_norm: True
use_flash_attn: True
use_flash_rmsnorm: False
use_flash_depthwise: False
use_flashfft: False
use_laughing_hyena: False
inference_mode: True
tokenizer_type: CharLevelTokenizer
prefill_style: fft
mlp_activation: gelu
print_activations: False
"""


def _evo2_yaml(preset: str) -> str:
    """The evo2 YAML of a 7B/20B/40B model, from the 1B file with the widths of spec §3."""
    cfg = PRESETS[preset]
    idx = {k: [i for i, c in enumerate(cfg.layout) if c == k] for k in "SMLA"}
    text = EVO2_1B_YAML
    for old, new in [("hidden_size: 1920", f"hidden_size: {cfg.d_model}"),
                     ("num_filters: 1920", f"num_filters: {cfg.d_model}"),
                     ("hcl_filter_groups: 1920", f"hcl_filter_groups: {cfg.d_model}"),
                     ("attn_layer_idxs: [3,10,17,24]", f"attn_layer_idxs: {idx['A']}"),
                     ("hcl_layer_idxs: [2,6,9,13,16,20,23]", f"hcl_layer_idxs: {idx['L']}"),
                     ("hcm_layer_idxs: [1,5,8,12,15,19,22]", f"hcm_layer_idxs: {idx['M']}"),
                     ("hcs_layer_idxs: [0,4,7,11,14,18,21]", f"hcs_layer_idxs: {idx['S']}"),
                     ("hcm_filter_groups: 128", f"hcm_filter_groups: {cfg.num_mr_groups}"),
                     ("hcs_filter_groups: 128", f"hcs_filter_groups: {cfg.num_se_groups}"),
                     ("num_layers: 25", f"num_layers: {cfg.num_blocks}"),
                     ("num_attention_heads: 15", f"num_attention_heads: {cfg.num_heads}"),
                     ("rotary_emb_base: 10000", f"rotary_emb_base: {int(cfg.rotary_base)}"),
                     ("inner_mlp_size: 5120", f"inner_mlp_size: {cfg.d_mlp}")]:
        assert old in text
        text = text.replace(old, new)
    if preset == "evo2_7b_base":
        text = text.replace("max_seqlen: 8192", "max_seqlen: 32768")  # the name says 8k (spec §3)
    if cfg.rotary_scale != 1.0:
        text = text.replace("max_seqlen: 8192", f"max_seqlen: {cfg.context_len}")
        text += f"use_interpolated_rotary_pos_emb: True\nrotary_emb_scaling_factor: {int(cfg.rotary_scale)}\n"
    return text


@pytest.mark.parametrize("preset", ["evo2_1b_base", "evo2_7b_base", "evo2_7b", "evo2_7b_262k", "evo2_20b",
                                    "evo2_40b_base", "evo2_40b"])
def test_from_vortex_yaml_of_the_evo2_configs_gives_the_presets(tmp_path, preset):
    path = tmp_path / "model.yml"
    path.write_text(EVO2_1B_YAML if preset == "evo2_1b_base" else _evo2_yaml(preset))
    cfg = ModelConfig.from_vortex_yaml(path)
    assert cfg.name == "shc-evo2-1b-8k-2T-v2"  # model_name is kept as the name
    assert dataclasses.replace(cfg, name=preset) == PRESETS[preset]


def _tiny_yaml(**overrides) -> dict:
    raw = {
        "model_name": "tiny-odd", "hidden_size": 96, "num_layers": 5, "num_attention_heads": 3,  # head 32
        "hcs_layer_idxs": [1], "hcm_layer_idxs": [2], "hcl_layer_idxs": [3, 4], "attn_layer_idxs": [0],
        "hcs_filter_groups": 8, "hcm_filter_groups": 4,  # group sizes 12 and 24, not 16
        "inner_mlp_size": 160, "max_seqlen": 4096, "rotary_emb_base": 500000,
        "use_fp8_input_projections": False,
        "some_future_key": {"nested": [1, 2]}, "use_flash_attn": True, "tokenizer_type": "CharLevelTokenizer",
    }
    raw.update(overrides)
    return raw


def test_from_vortex_yaml_odd_shapes_and_unknown_keys(tmp_path):
    import yaml

    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(_tiny_yaml()))
    cfg = ModelConfig.from_vortex_yaml(path)
    assert cfg.layout == "ASMLL"
    assert (cfg.d_model, cfg.num_heads, cfg.head_dim) == (96, 3, 32)
    assert (cfg.num_se_groups, cfg.num_mr_groups, cfg.d_mlp) == (8, 4, 160)
    assert cfg.rotary_base == 500000.0 and cfg.rotary_scale == 1.0
    assert cfg.context_len == 4096 and not cfg.fp8_input_projections and cfg.name == "tiny-odd"
    # the defaults of absent keys are Evo 2's
    assert (cfg.featurizer_len, cfg.se_filter_len, cfg.mr_filter_len, cfg.state_size, cfg.eps) == \
        (3, 7, 128, 16, 1e-6)
    assert ModelConfig.from_vortex_yaml(_tiny_yaml()) == cfg  # a dict works too


def test_from_vortex_yaml_rotary_interpolation():
    on = ModelConfig.from_vortex_yaml(_tiny_yaml(use_interpolated_rotary_pos_emb=True,
                                                 rotary_emb_scaling_factor=32, max_seqlen=262144))
    assert on.rotary_scale == 32.0 and on.context_len == 262144
    # the factor alone does nothing: vtx reads it only when interpolation is switched on
    off = ModelConfig.from_vortex_yaml(_tiny_yaml(rotary_emb_scaling_factor=32, max_seqlen=32768))
    assert off.rotary_scale == 1.0 and off.context_len == 8192


@pytest.mark.parametrize("overrides, message", [
    (dict(hcl_layer_idxs=[3]), r"layers \[4\]"),                  # block 4 has no kind
    (dict(attn_layer_idxs=[0, 1]), "attn_layer_idxs"),             # block 1 listed twice
    (dict(hcl_layer_idxs=[3, 4, 9]), "hcl_layer_idxs"),            # out of range
    (dict(num_attention_heads=5), "num_heads"),                    # does not divide 96
    (dict(hcm_filter_groups=7), "num_mr_groups"),
    (dict(hidden_size="wide"), "bad value"),
])
def test_from_vortex_yaml_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_vortex_yaml(_tiny_yaml(**overrides))


def test_from_vortex_yaml_missing_field_and_unreadable_file(tmp_path):
    raw = _tiny_yaml()
    del raw["inner_mlp_size"]
    with pytest.raises(ConfigError, match="inner_mlp_size"):
        ModelConfig.from_vortex_yaml(raw)
    with pytest.raises(ConfigError, match="cannot read"):
        ModelConfig.from_vortex_yaml(tmp_path / "absent.yml")
    (tmp_path / "list.yml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="not a mapping"):
        ModelConfig.from_vortex_yaml(tmp_path / "list.yml")
