"""Every Evo 2 name of issue #10 is accepted by load_model / --model / info: resolved through the local HF
cache (offline: one line naming the file expected), FP8-trained 1B/20B/40B refused on a CPU before any
import, a name that is none of them refused with the list of names."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from evo2lite.cli import app
from evo2lite.config import PRESETS
from evo2lite.errors import CheckpointError, Evo2LiteError
from evo2lite.fp8 import needs_fp8
from evo2lite.loading import EVO2_REPOS, load_model, read_config

NAMES = ["evo2_40b", "evo2_20b", "evo2_7b", "evo2_40b_base", "evo2_7b_base", "evo2_1b_base", "evo2_7b_262k",
         "evo2_7b_microviridae"]


@pytest.fixture
def empty_hf_cache(hf_cache, tmp_path, monkeypatch):  # hf_cache: tests/conftest.py, offline and empty
    monkeypatch.setenv("EVO2LITE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("EVO2LITE_ALLOW_INEXACT", raising=False)
    monkeypatch.delenv("EVO2LITE_FP8", raising=False)


def test_the_issue_names_are_the_known_names():
    assert sorted(EVO2_REPOS) == sorted(NAMES)
    assert needs_fp8(PRESETS["evo2_1b_base"]) and needs_fp8(PRESETS["evo2_40b"]) and needs_fp8(PRESETS["evo2_20b"])
    assert not any(needs_fp8(PRESETS[n]) for n in NAMES if "7b" in n)


@pytest.mark.parametrize("name", NAMES)
def test_each_name_resolves_offline(name, empty_hf_cache):
    if needs_fp8(PRESETS[name]):  # refused on a CPU before the HF cache is even looked at
        with pytest.raises(Evo2LiteError, match="--allow-inexact") as info:
            load_model(name)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError) as info:
        load_model(name, allow_inexact=True)
    text = str(info.value)
    assert f"expected {name}.pt" in text and EVO2_REPOS[name] in text and "\n" not in text
    cfg, source = read_config(name)  # info needs no weights
    assert cfg == PRESETS[name] and EVO2_REPOS[name] in source
    shown = CliRunner().invoke(app, ["info", name])
    assert shown.exit_code == 0 and EVO2_REPOS[name] in shown.stdout


@pytest.mark.parametrize("spec, hint", [("evo2_7B", "did you mean evo2_7b?"), ("evo2_1b", "did you mean"),
                                        ("evo2_70b", "")])
def test_unknown_evo2_name_lists_the_names(spec, hint, empty_hf_cache):
    for call in (lambda: load_model(spec, allow_inexact=True), lambda: read_config(spec)):
        with pytest.raises(CheckpointError, match="unknown Evo 2 model") as info:
            call()
        assert hint in str(info.value) and all(n in str(info.value) for n in NAMES)
    result = CliRunner().invoke(app, ["score", "-", "--model", spec], input=">a\nACGT\n")
    assert result.exit_code == 2 and "evo2_7b_microviridae" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_pt_path_keeps_the_not_found_error(empty_hf_cache):
    with pytest.raises(Evo2LiteError, match="evo2_7b.pt") as info:
        load_model("evo2_7b.pt", config="evo2_7b")
    assert "unknown Evo 2 model" not in str(info.value)
