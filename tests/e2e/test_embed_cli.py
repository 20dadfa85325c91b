"""`evo2lite embed` through typer's CliRunner: outputs, stdin, regions, and one-line errors with exit 2."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from evo2lite.apps.embed import embed
from evo2lite.apps.embed_cli import embed_command
from evo2lite.checkpoint import load_model, save_model

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"
LAMBDA = "gi|9626243|ref|NC_001416.1|"


def _app() -> typer.Typer:
    """The project's app when it has registered the command, else a stand-in registering it the same way."""
    from evo2lite.cli import app

    if any(c.name == "embed" for c in app.registered_commands):
        return app
    stand_in = typer.Typer()
    stand_in.callback()(lambda: None)
    stand_in.command("embed")(embed_command)
    return stand_in


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model") / "debug"
    save_model(load_model("debug", random_init=True, seed=3), directory)
    return directory


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(_app(), ["embed", *map(str, args)], input=input)


def test_fasta_to_hdf5_matches_the_api(tmp_path, model_dir):
    fasta = tmp_path / "x.fa"
    fasta.write_text(">s1\nACGTTGCAACGGTTAC\n>s2\nTTGACA\n")
    out = tmp_path / "x.h5"
    result = run(fasta, "-o", out, "-m", model_dir, "--layer", "blocks.2", "--layer", "blocks.28.mlp.l3,final",
                 "--chunk-size", "4", "--device", "cpu")
    assert result.exit_code == 2 and "unknown layer 'blocks.28.mlp.l3'" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    result = run(fasta, "-o", out, "-m", model_dir, "--layer", "blocks.2", "--layer", "blocks.3.mlp.l3,final",
                 "--chunk-size", "4", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "embedded 2 record(s), 22 bases" in result.output
    want = embed(load_model(str(model_dir)), "ACGTTGCAACGGTTAC", layers=["blocks.2", "blocks.3.mlp", "final"])
    with h5py.File(out) as f:
        assert sorted(f["s1"]) == ["blocks.2", "blocks.3.mlp", "final"]
        for layer, value in want.items():
            np.testing.assert_allclose(f["s1"][layer][()], value, atol=2e-5)


def test_stdin_npz_pooled(tmp_path, model_dir):
    out = tmp_path / "x.npz"
    result = run("-", "-o", out, "-m", model_dir, "--pool", "mean", "--rc-average", input=">r\nacgtACGTNNacgt\n")
    assert result.exit_code == 0, result.output
    with np.load(out) as z:
        assert z["r/blocks.5"].shape == (64,)


def test_regions_parquet(tmp_path, model_dir):
    out = tmp_path / "x.parquet"
    result = run(FIXTURES / "lambda.bgzf.fa.gz", "-o", out, "-m", model_dir, "--regions", f"{LAMBDA}:1-300",
                 "-r", f"{LAMBDA}:1001-1100", "--stride", "100", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    import pyarrow.parquet as pq

    table = pq.read_table(out).to_pydict()
    assert table["window_start"] == [0, 100, 200, 1000] and table["id"][-1] == f"{LAMBDA}:1001-1100"


@pytest.mark.parametrize("args,message", [
    (["--regions", f"{LAMBDA}:48000-50000"], "outside contig"),
    (["--regions", "chrZ:1-10"], "is not in"),
    (["--pool", "median"], "--pool must be one of"),
    (["--chunk-size", "0"], "--chunk-size must be at least 1"),
])
def test_errors_are_one_line_and_exit_2(tmp_path, model_dir, args, message):
    result = run(FIXTURES / "lambda.bgzf.fa.gz", "-o", tmp_path / "x.h5", "-m", model_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_empty_record_and_existing_output(tmp_path, model_dir):
    fasta = tmp_path / "e.fa"
    fasta.write_text(">full\nACGT\n>none\n")
    result = run(fasta, "-o", tmp_path / "x.h5", "-m", model_dir)
    assert result.exit_code == 2 and "record 'none' is empty" in result.output
    assert not (tmp_path / "x.h5").exists()
    (tmp_path / "y.h5").write_text("")
    result = run(fasta, "-o", tmp_path / "y.h5", "-m", model_dir)
    assert result.exit_code == 2 and "--force" in result.output


def test_no_progress_switches_the_bar_off(tmp_path, model_dir, monkeypatch):
    # the bar is drawn off a terminal with EVO2LITE_PROGRESS=1; --no-progress silences it, as for score-vcf
    monkeypatch.setenv("EVO2LITE_PROGRESS", "1")
    fasta = tmp_path / "x.fa"
    fasta.write_text(">s1\nACGTTGCAACGGTTAC\n")
    shown = run(fasta, "-o", tmp_path / "a.npz", "-m", model_dir, "--device", "cpu")
    silent = run(fasta, "-o", tmp_path / "b.npz", "-m", model_dir, "--device", "cpu", "--no-progress")
    assert shown.exit_code == silent.exit_code == 0, (shown.output, silent.output)
    assert "embedding" in shown.output and "embedding" not in silent.output
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
