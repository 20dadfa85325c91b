"""evo2lite.loading: Evo 2 names through the local HF cache (imported once), streaming import (bounded host
memory), `info` without weights, and the scoring-window default."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from evo2lite import loading
from evo2lite.checkpoint import load_state, save_vortex
from evo2lite.config import PRESETS, ModelConfig
from evo2lite.errors import CheckpointError
from evo2lite.fp8 import Fp8Linear
from evo2lite.loading import EVO2_REPOS, load_model, read_config, scoring_window
from evo2lite.model import StripedHyena2, init_weights_


def te_extra_state(seed: int) -> io.BytesIO:
    """What TE 1.x's get_extra_state writes: a BytesIO holding torch.save of the FP8 meta tensors."""
    gen = torch.Generator().manual_seed(seed)
    history = torch.rand(16, 3, generator=gen) * 4
    scale = 448.0 / history.max(0).values
    state = {"scale_fwd": scale, "scale_inv_fwd": 1 / scale, "amax_history_fwd": history,
             "scale_bwd": torch.ones(2), "scale_inv_bwd": torch.ones(2), "amax_history_bwd": torch.zeros(16, 2),
             "global_fp8_buffer": {}, "extra_fp8_variables": {"num_gemms": 1, "fp8_max_fwd": 448.0}}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf


def write_fp8_official(path, name="evo2-tiny-fp8"):
    """A tiny official-format checkpoint of an FP8-trained shape, with TE extra states."""
    cfg = dataclasses.replace(PRESETS["debug"], fp8_input_projections=True, name=name)
    save_vortex(cfg, init_weights_(StripedHyena2(cfg), 3).state_dict(), path)
    raw = torch.load(path, weights_only=True)
    for i, kind in enumerate(cfg.layout):
        if kind != "A":
            raw[f"blocks.{i}.projections._extra_state"] = te_extra_state(i)
    torch.save(raw, path)
    return path, path.with_suffix(".yml"), cfg


@pytest.fixture
def hf_cache(hf_cache, tmp_path, monkeypatch):
    """tests/conftest.py's offline HF cache, with an empty evo2lite import cache."""
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "evo2lite-cache"))
    return hf_cache


def test_every_evo2_name_has_a_preset_and_a_repo():
    for name in EVO2_REPOS:
        assert PRESETS[name].fp8_input_projections
    assert PRESETS["evo2_7b_microviridae"].num_params() == PRESETS["evo2_7b_base"].num_params()
    assert EVO2_REPOS["evo2_7b_microviridae"] == "evo-design/evo-2-7b-8k-microviridae"


def test_name_resolves_through_the_hf_cache_and_imports_once(tmp_path, hf_cache, capsys, monkeypatch):
    pt, yml, cfg = write_fp8_official(tmp_path / "evo2_1b_base.pt")
    hf_cache("arcinstitute/evo2_1b_base", {"evo2_1b_base.pt": pt})
    _, expected, _ = load_state(pt, yml)
    model = load_model("evo2_1b_base", config=yml, allow_inexact=True)
    assert "importing evo2_1b_base once" in capsys.readouterr().err
    cached = tmp_path / "evo2lite-cache" / "evo2_1b_base"
    assert (cached / "model.safetensors").exists()
    assert model.source == f"evo2_1b_base (arcinstitute/evo2_1b_base, imported into {cached})"
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k].float()), k
    # the FP8 scaling state of every Hyena block survives the import, decoded
    proj = model.blocks[0].mixer.in_proj
    assert isinstance(proj, Fp8Linear) and proj.backend == "emulate"
    want = torch.load(io.BytesIO(te_extra_state(0).getvalue()), weights_only=True)
    assert torch.equal(proj.scaling.scale, want["scale_fwd"])
    assert torch.equal(proj.scaling.amax_history, want["amax_history_fwd"])
    # the second load reuses the cache and never looks at the HF cache again
    monkeypatch.setattr(loading, "_hf_cached_repo", lambda name: pytest.fail("re-imported"))
    again = load_model("evo2_1b_base", allow_inexact=True)
    assert "importing" not in capsys.readouterr().err
    assert again.blocks[4].mixer.in_proj.scaling.scale.tolist() == \
        torch.load(io.BytesIO(te_extra_state(4).getvalue()), weights_only=True)["scale_fwd"].tolist()
    assert read_config("evo2_1b_base")[0] == cfg  # info: the imported config, no weights


def test_name_missing_offline_names_the_file(hf_cache):
    with pytest.raises(CheckpointError, match=r"evo2_7b\.pt .*arcinstitute/evo2_7b") as info:
        load_model("evo2_7b")
    assert "\n" not in str(info.value)
    cfg, source = read_config("evo2_40b")  # info works without any download
    assert cfg == PRESETS["evo2_40b"] and "not imported" in source


def test_unsafe_te_state_is_refused_with_one_line(tmp_path):
    pt, yml, _ = write_fp8_official(tmp_path / "x.pt")
    with torch.serialization.safe_globals([io.BytesIO]):
        raw = torch.load(pt, weights_only=True)
    buf = io.BytesIO()
    torch.save({"scale_fwd": torch.ones(3), "recipe": ModelConfig}, buf)  # a class: not weights-only safe
    raw["blocks.0.projections._extra_state"] = buf
    torch.save(raw, pt)
    with pytest.raises(CheckpointError, match="cannot read the FP8 scaling state safely") as info:
        load_model(pt, config=yml, allow_inexact=True)
    assert "ModelConfig" in str(info.value) and "\n" not in str(info.value)


def test_uint8_tensor_extra_state_of_newer_te(tmp_path):
    pt, yml, _ = write_fp8_official(tmp_path / "x.pt")
    with torch.serialization.safe_globals([io.BytesIO]):
        raw = torch.load(pt, weights_only=True)
    data = te_extra_state(7).getvalue()
    raw["blocks.0.projections._extra_state"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    torch.save(raw, pt)
    model = load_model(pt, config=yml, allow_inexact=True)
    want = torch.load(io.BytesIO(data), weights_only=True)["scale_fwd"]
    assert torch.equal(model.blocks[0].mixer.in_proj.scaling.scale, want)


def test_streaming_import_equals_the_materialised_state(tmp_path):
    pt, yml, _ = write_fp8_official(tmp_path / "x.pt")
    _, expected, _ = load_state(pt, yml)
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model(pt, config=yml, dtype=dtype, fp8="off", allow_inexact=True)
        for k, v in model.state_dict().items():
            want = expected[k].float() if k.endswith(("log_poles", "residues", "inv_freq")) else expected[k].to(dtype)
            assert v.dtype == want.dtype and torch.equal(v, want), k


_RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from evo2lite.loading import load_model
    def status_kib(key):
        return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1])
    from evo2lite.model import StripedHyena2
    from evo2lite.config import PRESETS
    with torch.device("meta"):  # the first meta-device build imports torch's meta kernels: not our cost
        StripedHyena2(PRESETS["debug"])
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident set
    before = status_kib("VmRSS")
    model = load_model(sys.argv[1], config=sys.argv[2], dtype="bfloat16")
    out = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    big = max(t.numel() * t.element_size() for t in model.state_dict().values())
    print(json.dumps({"grew": (status_kib("VmHWM") - before) * 1024, "out": out, "largest": big}))
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="reads /proc (Linux)")
def test_import_holds_no_second_copy(tmp_path):
    """Peak host RSS of a bf16 import grows by at most the mapped file + the output + one tensor: the old
    path (an fp32 copy of the whole state, then a cast) grew by file + 3x the output."""
    cfg = ModelConfig(layout="SMLA", d_model=1024, num_heads=8, d_mlp=2048, num_se_groups=8, num_mr_groups=8,
                      name="rss-test")
    model = StripedHyena2(cfg)
    for p in model.parameters():  # values do not matter here; init_weights_ is slow at this width
        p.data.normal_(0, 0.02)
    pt = tmp_path / "m.pt"
    save_vortex(cfg, model.state_dict(), pt)
    del model
    file_size = pt.stat().st_size
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(pt), str(pt.with_suffix(".yml"))],
                         capture_output=True, text=True, env=env, check=True)
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["out"] > 60e6  # big enough that a second copy would show
    assert r["grew"] < file_size + r["out"] + 2 * r["largest"] + 24e6, r


def test_scoring_window_default_and_warning(capsys):
    model = load_model("debug", random_init=True)  # trained context 1,024
    assert scoring_window(model, None) == 1024
    big = dataclasses.replace(PRESETS["debug"], context_len=1 << 20)
    model.config = big
    assert scoring_window(model, None) == 8192  # Evo 2's recipe, not the 1M context
    assert capsys.readouterr().err == ""
    model.config = PRESETS["debug"]
    assert scoring_window(model, 4096, "--context") == 4096
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "--context 4,096 exceeds" in err


def test_cli_score_vcf_takes_config_and_records_fp8(tmp_path):
    """score-vcf with an Evo 2 .pt + --config (FP8-trained shape): refused on a CPU in one line, run with
    --allow-inexact, and the VCF header records the dtype and the FP8 choice."""
    from pathlib import Path

    from typer.testing import CliRunner

    from evo2lite.cli import app

    examples = Path(__file__).resolve().parents[2] / "data" / "examples"
    pt, yml, _ = write_fp8_official(tmp_path / "tiny.pt")
    args = ["score-vcf", str(examples / "chr20_example.vcf.gz"), "-f", str(examples / "chr20_GRCh37_example.fa.gz"),
            "-o", str(tmp_path / "out.vcf"), "--model", str(pt), "--config", str(yml), "--window", "64",
            "--device", "cpu", "--threads", "1", "--no-progress"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--allow-inexact" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    ok = CliRunner().invoke(app, args + ["--allow-inexact"])
    assert ok.exit_code == 0, ok.stderr
    header = [line for line in (tmp_path / "out.vcf").read_text().splitlines() if line.startswith("##evo2lite_")]
    assert "##evo2lite_fp8=emulate (inexact)" in header and "##evo2lite_dtype=float32" in header


def test_convert_keeps_the_fp8_state(tmp_path):
    from evo2lite.checkpoint import convert

    pt, yml, _ = write_fp8_official(tmp_path / "x.pt")
    out = convert(pt, tmp_path / "ours", config=yml)
    direct = load_model(pt, config=yml, allow_inexact=True)
    again = load_model(out, allow_inexact=True)
    for i in (0, 1, 2, 4, 5, 6):  # every Hyena block of SMLASML
        a, b = direct.blocks[i].mixer.in_proj.scaling, again.blocks[i].mixer.in_proj.scaling
        assert torch.equal(a.scale, b.scale) and torch.equal(a.amax_history, b.amax_history)
    for k, v in direct.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
