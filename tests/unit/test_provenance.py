"""Every output records what produced it (score TSV and per-position files, generate FASTA headers, embed
metadata): model source, weights digest (score-vcf's), dtype, FP8 mode and the window; and --fp8 /
--allow-inexact reach load_model from embed, generate and plot track as from score / score-vcf / selftest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from evo2lite.apps.provenance import run_provenance, weights_digest
from evo2lite.apps.score_vcf import _model_identity
from evo2lite.cli import app
from evo2lite.loading import load_model
from test_loading import write_fp8_official  # noqa: E402  (tests/unit is on sys.path)

SEQS = ">a\nACGTACGGTACCATGACGTTAGCA\n>b\nGGGATTACAGATTACACCATG\n"


@pytest.fixture(scope="module")
def fp8_model(tmp_path_factory):
    """A tiny official-format checkpoint of a 1B-like FP8-trained shape (refused on a CPU without
    --allow-inexact), and a FASTA."""
    folder = tmp_path_factory.mktemp("fp8")
    pt, yml, _ = write_fp8_official(folder / "tiny.pt", name="evo2-tiny-1b-fp8")
    fasta = folder / "in.fa"
    fasta.write_text(SEQS)
    return pt, yml, fasta


@pytest.fixture(autouse=True)
def _no_fp8_environment(monkeypatch):
    monkeypatch.delenv("EVO2LITE_FP8", raising=False)
    monkeypatch.delenv("EVO2LITE_ALLOW_INEXACT", raising=False)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def meta_of(text: str) -> dict[str, str]:
    return dict(line[len("#evo2lite_"):].split("=", 1) for line in text.splitlines() if line.startswith("#evo2lite_"))


def test_run_provenance_keys_and_digest():
    model = load_model(None)
    meta = run_provenance(model, context=2048, unused=None)
    assert meta["weights"] == _model_identity(model)["weights"] == weights_digest(model)
    assert (meta["model"], meta["dtype"], meta["fp8"]) == ("shipped default model", "float32", "off")
    assert meta["context"] == "2048" and meta["trained_context"] == "2048" and "unused" not in meta
    other = load_model("debug", random_init=True)
    assert weights_digest(other) != meta["weights"]


def test_score_tsv_records_provenance(fp8_model, tmp_path):
    pt, yml, fasta = fp8_model
    args = ["score", fasta, "--model", pt, "--config", yml, "--device", "cpu", "--context", "16"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--allow-inexact" in refused.stderr
    ok = invoke(*args, "--allow-inexact", "-o", tmp_path / "s.tsv")
    assert ok.exit_code == 0, ok.stderr
    text = (tmp_path / "s.tsv").read_text()
    meta = meta_of(text)
    assert meta["fp8"] == "emulate (inexact)" and meta["dtype"] == "float32" and meta["context"] == "16"
    assert meta["model"] == str(pt) and len(meta["weights"]) == 64
    assert meta["weights"] == weights_digest(load_model(pt, config=yml, allow_inexact=True))
    import pandas as pd

    table = pd.read_csv(tmp_path / "s.tsv", sep="\t", comment="#")
    assert list(table["name"]) == ["a", "b"] and np.isfinite(table["sum_logprob"]).all()
    off = invoke(*args, "--fp8", "off", "--allow-inexact")  # stdout too; the default window when not given
    assert off.exit_code == 0 and meta_of(off.stdout)["fp8"] == "off"
    default = invoke("score", fasta, "--device", "cpu")
    assert meta_of(default.stdout)["context"] == "2048"  # min(trained 2,048, 8,192)


def test_generate_takes_fp8_options_and_records_them(fp8_model):
    pt, yml, _ = fp8_model
    args = ["generate", "--prompt", "ACGT", "-n", "5", "--seed", "1", "--model", pt, "--config", yml,
            "--device", "cpu"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--allow-inexact" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    for extra, want in ((["--allow-inexact"], "emulate(inexact)"), (["--fp8", "off", "--allow-inexact"], "off")):
        ok = invoke(*args, *extra)
        assert ok.exit_code == 0, ok.stderr
        header = ok.stdout.splitlines()[0].split()
        assert f"fp8={want}" in header and "dtype=float32" in header
        digest = weights_digest(load_model(pt, config=yml, fp8="off", allow_inexact=True))
        assert f"weights={digest[:16]}" in header
    bad = invoke(*args, "--fp8", "fast")
    assert bad.exit_code == 2 and "--fp8 must be" in bad.stderr


def test_embed_takes_fp8_options_and_records_them(fp8_model, tmp_path):
    pt, yml, fasta = fp8_model
    args = ["embed", fasta, "--model", pt, "--config", yml, "--device", "cpu", "--pool", "mean"]
    refused = invoke(*args, "-o", tmp_path / "r.npz")
    assert refused.exit_code == 2 and "--allow-inexact" in refused.stderr
    assert not (tmp_path / "r.npz").exists()
    for extra, want in ((["--allow-inexact"], "emulate (inexact)"), (["--fp8", "off", "--allow-inexact"], "off")):
        out = tmp_path / f"e{len(extra)}.npz"
        ok = invoke(*args, *extra, "-o", out)
        assert ok.exit_code == 0, ok.stderr
        with np.load(out) as npz:
            meta = json.loads(str(npz["__metadata__"]))
        assert meta["fp8"] == want and meta["dtype"] == "float32" and meta["model_source"] == str(pt)
        assert meta["weights"] == weights_digest(load_model(pt, config=yml, fp8="off", allow_inexact=True))


def test_python_api_passes_fp8_to_load_model(fp8_model, tmp_path):
    from evo2lite.apps.embed_io import embed_file
    from evo2lite.apps.generate import generate
    from evo2lite.errors import Evo2LiteError

    pt, yml, fasta = fp8_model
    with pytest.raises(Evo2LiteError, match="--allow-inexact"):
        generate("ACGT", 3, model=str(pt), config=str(yml), device="cpu", seed=0)
    [row] = generate("ACGT", 3, model=str(pt), config=str(yml), device="cpu", seed=0, fp8="off", allow_inexact=True)
    assert len(row.token_ids) <= 3
    with pytest.raises(Evo2LiteError, match="--allow-inexact"):
        embed_file(fasta, tmp_path / "x.npz", model=str(pt), config=str(yml), device="cpu", pool="mean")
    summary = embed_file(fasta, tmp_path / "y.npz", model=str(pt), config=str(yml), device="cpu", pool="mean",
                         fp8="emulate", allow_inexact=True)
    assert summary["records"] == 2


def test_fp8_mmaemu_problems_are_one_line_errors(fp8_model):
    """--fp8 mmaemu without the package, or on a GEMM shape mmaemu cannot decide (this tiny model's K = 128
    is below its recorded envelope), is a usage error, not a traceback."""
    _, _, fasta = fp8_model
    result = invoke("score", fasta, "--device", "cpu", "--fp8", "mmaemu")
    assert result.exit_code == 2 and "--fp8 mmaemu" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_plot_track_takes_fp8_options(fp8_model, tmp_path):
    pytest.importorskip("matplotlib")
    from pathlib import Path

    pt, yml, _ = fp8_model
    lam = tmp_path / "lambda.fa"  # a copy: the reference's .fai is built beside it
    lam.write_bytes((Path(__file__).resolve().parents[2] / "data" / "fixtures" / "lambda.fa").read_bytes())
    args = ["plot", "track", lam, "-r", "gi|9626243|ref|NC_001416.1|:1001-1100", "--flank", "16", "--model", pt,
            "--config", yml, "--device", "cpu", "-o", tmp_path / "t.png"]
    refused = invoke(*args)
    assert refused.exit_code == 2 and "--allow-inexact" in refused.stderr and not (tmp_path / "t.png").exists()
    ok = invoke(*args, "--allow-inexact")
    assert ok.exit_code == 0, ok.stderr
    assert (tmp_path / "t.png").stat().st_size > 0


def test_score_per_position_outputs_record_provenance(tmp_path):
    fasta = tmp_path / "in.fa"
    fasta.write_text(SEQS)
    args = ["score", fasta, "--device", "cpu", "--dtype", "float32", "-o", tmp_path / "s.tsv"]
    assert invoke(*args, "--per-position", tmp_path / "pp.bedGraph").exit_code == 0
    table_meta = meta_of((tmp_path / "s.tsv").read_text())
    lines = (tmp_path / "pp.bedGraph").read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph") and meta_of("\n".join(lines)) == table_meta
    assert invoke(*args, "--force", "--per-position", tmp_path / "pp.npz").exit_code == 0
    with np.load(tmp_path / "pp.npz") as npz:
        assert json.loads(str(npz["__metadata__"])) == table_meta
        assert npz["0:a"].shape == (24,)
