"""The two shipped models by name (issue #20): `small` / `evo2lite-small` (the default, no --model) and
`base` / `evo2lite-base` (bf16 storage, upcast to fp32 on CPU) for load_model, --model and info; a local path
of the same name wins, as for the Evo 2 names; near-miss names and a stripped install fail in one line."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import evo2lite.checkpoint as ckpt
from evo2lite.checkpoint import SHIPPED_MODELS, save_model
from evo2lite.cli import app
from evo2lite.config import PRESETS
from evo2lite.errors import CheckpointError, Evo2LiteError
from evo2lite.loading import load_model, read_config
from evo2lite.model import FP32_PARAMS

BASE_DIR = SHIPPED_MODELS["evo2lite-base"]


@pytest.fixture(autouse=True)
def _no_fp8_environment(monkeypatch):
    monkeypatch.delenv("EVO2LITE_FP8", raising=False)
    monkeypatch.delenv("EVO2LITE_ALLOW_INEXACT", raising=False)


@pytest.fixture(scope="module")
def base():
    return load_model("base")


@pytest.fixture(scope="module")
def ids_BL():
    gen = torch.Generator().manual_seed(20)
    return torch.tensor(list(b"ACGT"))[torch.randint(0, 4, (1, 64), generator=gen)]


def test_base_loads_in_fp32_on_cpu(base):
    assert base.config.name == "evo2lite-base" and base.config.context_len == 8192
    assert base.config.layout == "SMLASMLASMLA" and base.config.d_model == 256
    assert base.source == "shipped model evo2lite-base" == base.provenance["model"]
    assert base.provenance["dtype"] == "float32"
    for name, p in base.state_dict().items():
        assert p.dtype == torch.float32 and p.device.type == "cpu", name
        assert torch.isfinite(p).all(), name


def test_bf16_storage_is_upcast_exactly(base):
    state = base.state_dict()
    stored = set()
    with safe_open(str(BASE_DIR / "model.safetensors"), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            stored.add(str(t.dtype))
            assert (t.dtype == torch.float32) == name.endswith(FP32_PARAMS), name  # the file's own rule
            assert state[name].dtype == torch.float32 and torch.equal(state[name], t.float()), name
        assert sorted(f.keys()) == sorted(state)
    assert stored == {"torch.bfloat16", "torch.float32"}


def test_every_name_of_base_is_the_same_model(base, ids_BL):
    with torch.inference_mode():
        logits_BLV = base(ids_BL)
        assert logits_BLV.shape == (1, 64, 512) and torch.isfinite(logits_BLV).all()
        for spec in (BASE_DIR, str(BASE_DIR), "evo2lite-base"):
            assert torch.equal(load_model(spec)(ids_BL), logits_BLV), spec
        small_BLV = load_model("small")(ids_BL)
    assert small_BLV.shape == logits_BLV.shape
    assert (small_BLV - logits_BLV).abs().max() > 0.1  # a different model, not a relabelled copy
    assert load_model(BASE_DIR).source == str(BASE_DIR)  # a path keeps its own description


def test_small_is_the_default():
    default = load_model()
    assert default.config.name == "evo2lite-small" and default.source == "shipped default model"
    want = default.state_dict()
    for spec in ("small", "evo2lite-small"):
        model = load_model(spec)
        assert model.source == "shipped model evo2lite-small"
        got = model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), spec


@pytest.mark.parametrize("spec, name, context", [("base", "evo2lite-base", "8,192"),
                                                 ("small", "evo2lite-small", "2,048"),
                                                 ("evo2lite-base", "evo2lite-base", "8,192")])
def test_info_names_the_shipped_model(spec, name, context):
    result = CliRunner().invoke(app, ["info", spec])
    assert result.exit_code == 0, result.output
    assert f"model:        {name}" in result.stdout and f"shipped model {name}" in result.stdout
    assert f"context:      {context} (trained)" in result.stdout


def test_model_option_takes_the_names(ids_BL, tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(">a\n" + bytes(ids_BL[0].tolist()).decode() + "\n")
    out = {}
    for spec in ("base", str(BASE_DIR)):
        tsv = tmp_path / f"{len(out)}.tsv"
        result = CliRunner().invoke(app, ["score", str(fasta), "--model", spec, "-o", str(tsv)])
        assert result.exit_code == 0, result.output
        out[spec] = tsv.read_text()
    body = [[line.split("\t") for line in text.splitlines() if not line.startswith("#")] for text in out.values()]
    assert body[0] == body[1] and len(body[0]) == 2  # header + the record: the same scores
    digests = [[ln for ln in text.splitlines() if ln.startswith("#evo2lite_weights=")] for text in out.values()]
    assert digests[0] == digests[1] and len(digests[0]) == 1  # the same weights; only the source differs
    assert "#evo2lite_model=shipped model evo2lite-base\n" in out["base"]


@pytest.mark.parametrize("spec, hint", [("bsae", "did you mean base?"), ("smal", "did you mean small?"),
                                        ("evo2lite-bsae", "did you mean evo2lite-base?")])
def test_near_miss_names_stay_errors(spec, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Evo2LiteError) as info:
        load_model(spec)
    assert hint in str(info.value) and "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["score", "-", "--model", spec], input=">a\nACGT\n")
    assert result.exit_code == 2 and hint in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_local_path_of_that_name_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_model(load_model("debug", random_init=True), tmp_path / "base")
    model = load_model("base")
    assert model.config == PRESETS["debug"] and model.source == "base"
    assert read_config("base") == (PRESETS["debug"], "base")
    assert load_model("evo2lite-base").config.name == "evo2lite-base"  # the full name still reaches it
    (tmp_path / "small").mkdir()  # not a model: the error says what it hides
    with pytest.raises(CheckpointError, match=r"not a model directory.*hides the shipped model evo2lite-small "
                                              r"\(--model evo2lite-small still names it\)"):
        load_model("small")


def test_missing_shipped_folder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(ckpt.SHIPPED_MODELS, "evo2lite-base", tmp_path / "stripped")
    with pytest.raises(CheckpointError, match="shipped model evo2lite-base is missing") as info:
        load_model("base")
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(app, ["info", "base"])
    assert result.exit_code == 2 and "evo2lite-base is missing" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    monkeypatch.setattr(ckpt, "DEFAULT_MODEL_DIR", tmp_path / "stripped")
    with pytest.raises(CheckpointError, match="shipped default model evo2lite-small is missing"):
        load_model()
