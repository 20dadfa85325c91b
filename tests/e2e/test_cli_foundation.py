"""The foundation's CLI through typer's CliRunner: info, convert, score, and the error contract (bad input ->
one line on stderr, exit code 2, no traceback; EVO2LITE_DEBUG=1 lets the exception through)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evo2lite.checkpoint import load_model, load_state, save_model, save_vortex
from evo2lite.cli import app
from evo2lite.config import ModelConfig
from evo2lite.errors import Evo2LiteError
from evo2lite.model import StripedHyena2, init_weights_

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "data" / "fixtures"
HEADER = "name\tlength\tsum_logprob\tmean_logprob"


@pytest.fixture(autouse=True)
def _plain_env(monkeypatch):
    monkeypatch.delenv("EVO2LITE_DEBUG", raising=False)
    monkeypatch.delenv("EVO2LITE_PROGRESS", raising=False)


def run(*args, env=None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def assert_ok(result):
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result


def assert_user_error(result, *needles):
    """Exit 2, exactly one line on stderr naming the problem, nothing on stdout, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("evo2lite: error: ")
    assert "Traceback" not in result.output and result.stdout == ""
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A random debug model in our format, a small official checkpoint (+ YAML) of another shape, a truncated
    copy of it, a FASTA, a missing and a garbage FASTA path."""
    root = tmp_path_factory.mktemp("cli")
    save_model(load_model("debug", random_init=True, seed=1), root / "debug_model")
    cfg = ModelConfig(layout="SMLA", d_model=32, num_heads=2, d_mlp=48, num_se_groups=4, num_mr_groups=2,
                      name="tiny-cli")
    state = init_weights_(StripedHyena2(cfg), seed=2).state_dict()
    save_vortex(cfg, state, root / "tiny.pt")  # writes tiny.pt and tiny.yml
    data = (root / "tiny.pt").read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "seqs.fa").write_text(">first some description\nACGTACGTTTGACCA\nacgtnnACGT\n"
                                  ">second\nGGGGCCCCAAAATTTT\n>one_base\nA\n>third\n" + "ACGT" * 40 + "\n")
    (root / "clean.fa").write_text(">a\nACGTTGCA\n>b\nGGGATTACA\n")  # no record that warns
    (root / "garbage.fa").write_bytes(bytes(range(256)) * 8)
    return root


# --- info ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset, count", [("evo2_1b_base", "1,107,989,760"), ("evo2_7b", "6,581,722,880"),
                                           ("evo2_40b", "41,117,574,144"), ("debug", "329,784")])
def test_info_prints_the_exact_parameter_count(preset, count):
    result = assert_ok(run("info", preset))
    assert f"parameters:   {count}" in result.stdout
    assert result.stderr == ""
    assert "preset" in result.stdout


def test_info_of_a_model_directory_and_a_checkpoint(work):
    result = assert_ok(run("info", work / "debug_model"))
    assert "329,784" in result.stdout and str(work / "debug_model") in result.stdout
    result = assert_ok(run("info", work / "tiny.pt", "--config", work / "tiny.yml"))
    assert "SMLA" in result.stdout and "tiny-cli" in result.stdout


# --- convert ---------------------------------------------------------------------------------------------

def test_convert_round_trip_is_bit_exact(work, tmp_path):
    assert_ok(run("convert", work / "tiny.pt", "--config", work / "tiny.yml", "-o", tmp_path / "ours"))
    assert_ok(run("convert", tmp_path / "ours", "--to", "vortex", "-o", tmp_path / "back.pt"))
    assert (tmp_path / "back.yml").exists()
    assert_ok(run("convert", tmp_path / "back.pt", "--config", tmp_path / "back.yml", "-o", tmp_path / "again"))
    cfg0, s0, _ = load_state(work / "tiny.pt", work / "tiny.yml")
    for directory in ("ours", "again"):
        cfg, s, _ = load_state(tmp_path / directory)
        assert cfg == cfg0 and set(s) == set(s0)
        assert all(s[k].dtype == s0[k].dtype and torch.equal(s[k], s0[k]) for k in s0)
    # the output exists: refused without --force, replaced with it
    assert_user_error(run("convert", work / "tiny.pt", "--config", work / "tiny.yml", "-o", tmp_path / "ours"),
                      "--force")
    assert_ok(run("convert", work / "tiny.pt", "--config", work / "tiny.yml", "-o", tmp_path / "ours", "--force"))
    assert_user_error(run("convert", work / "tiny.pt", "--config", work / "tiny.yml", "--to", "onnx",
                          "-o", tmp_path / "x"), "onnx")


# --- score -----------------------------------------------------------------------------------------------

def parse_table(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if not line.startswith("#evo2lite_")]  # provenance first
    assert lines[0] == HEADER
    return [line.split("\t") for line in lines[1:]]


def test_score_table_in_fasta_order(work):
    result = assert_ok(run("score", work / "seqs.fa", "--model", work / "debug_model"))
    rows = parse_table(result.stdout)
    assert [(r[0], int(r[1])) for r in rows] == [("first", 25), ("second", 16), ("one_base", 1), ("third", 160)]
    assert rows[2][2:] == ["nan", "nan"]
    assert float(rows[0][2]) < 0 and float(rows[0][3]) == pytest.approx(float(rows[0][2]) / 24, abs=1e-5)
    # the one-line warning for the 1-base record goes to stderr
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines() if "one_base" in line]
    assert len(result.stderr.splitlines()) == 1


def test_score_outputs(work, tmp_path):
    args = ["score", work / "seqs.fa", "--model", work / "debug_model", "--batch-size", "2"]
    stdout = assert_ok(run(*args)).stdout
    assert_ok(run(*args, "-o", tmp_path / "s.tsv", "--per-position", tmp_path / "pp.bedGraph"))
    assert (tmp_path / "s.tsv").read_text() == stdout
    bed = [line for line in (tmp_path / "pp.bedGraph").read_text().splitlines()
           if not line.startswith("#evo2lite_")]  # provenance comments after the track line
    assert bed[0].startswith("track type=bedGraph")
    assert len(bed) - 1 == 24 + 15 + 0 + 159  # L - 1 scored positions per record
    chrom, start, end, value = bed[1].split("\t")
    assert (chrom, start, end) == ("first", "1", "2") and float(value) < 0
    total = sum(float(line.split("\t")[3]) for line in bed[1:] if line.startswith("second\t"))
    assert total == pytest.approx(float(parse_table(stdout)[1][2]), abs=1e-4)

    assert_ok(run(*args, "--per-position", tmp_path / "pp.npz"))
    with np.load(tmp_path / "pp.npz") as npz:
        assert npz.files == ["0:first", "1:second", "2:one_base", "3:third", "__metadata__"]
        assert npz["0:first"].shape == (25,) and np.isnan(npz["0:first"][0])
        assert np.nansum(npz["3:third"]) == pytest.approx(float(parse_table(stdout)[3][2]), abs=1e-4)
    # existing outputs are not overwritten without --force
    assert_user_error(run(*args, "-o", tmp_path / "s.tsv"), "--force")
    assert_ok(run(*args, "-o", tmp_path / "s.tsv", "--force"))


@pytest.mark.slow
def test_score_real_fixtures(work, tmp_path):
    """Phage lambda (one 48.5 kb record, gzip; scored with sliding windows) and 20 Dictyostelium cDNAs."""
    lam, dicty = FIXTURES / "lambda.fa.gz", FIXTURES / "dicty_cdna20.fa"
    if not (lam.exists() and dicty.exists()):
        pytest.skip("data/fixtures/ lambda.fa.gz or dicty_cdna20.fa is missing")
    from evo2lite.pipelines.fasta import read_sequences

    expected = [(r.name, len(r.seq)) for path in (lam, dicty) for r in read_sequences(path)]
    rows = []
    for path in (lam, dicty):
        result = assert_ok(run("score", path, "--model", work / "debug_model", "--context", "1024",
                               "--batch-size", "16"))
        assert result.stderr == ""
        rows += parse_table(result.stdout)
    assert [(r[0], int(r[1])) for r in rows] == expected
    assert expected[0][1] == 48502 and len(expected) == 21
    assert all(np.isfinite(float(r[2])) and float(r[3]) < 0 for r in rows)


# --- the error contract ----------------------------------------------------------------------------------

BAD_INPUTS = {
    "unknown preset": (["info", "evo2_9000b"], ["evo2_9000b"]),
    "unknown model": (["score", "{fa}", "--model", "no/such/model"], ["no/such/model"]),
    "preset without weights": (["score", "{fa}", "--model", "evo2_7b"], ["preset"]),
    "wrong shapes": (["score", "{fa}", "--model", "{w}/tiny.pt", "--config", "debug"], ["shape"]),
    "wrong config file": (["score", "{fa}", "--model", "{w}/tiny.pt", "--config", "{w}/seqs.fa"], []),
    "truncated checkpoint": (["score", "{fa}", "--model", "{w}/truncated.pt", "--config", "{w}/tiny.yml"],
                             ["truncated.pt"]),
    "truncated checkpoint, convert": (["convert", "{w}/truncated.pt", "--config", "{w}/tiny.yml", "-o", "{tmp}/o"],
                                      ["truncated.pt"]),
    "checkpoint without config": (["score", "{fa}", "--model", "{w}/tiny.pt"], ["--config"]),
    "missing FASTA": (["score", "{w}/absent.fa", "--model", "{w}/debug_model"], ["absent.fa"]),
    "garbage FASTA": (["score", "{w}/garbage.fa", "--model", "{w}/debug_model"], ["garbage.fa"]),
    "bad dtype": (["score", "{fa}", "--model", "{w}/debug_model", "--dtype", "float16"], ["float16"]),
    "bad context": (["score", "{fa}", "--model", "{w}/debug_model", "--context", "1"], ["context"]),
    "output folder missing": (["score", "{fa}", "--model", "{w}/debug_model", "-o", "{tmp}/no/dir/out.tsv"],
                              ["does not exist"]),
}


def expand(args, work, tmp_path):
    return [a.format(w=work, fa=work / "clean.fa", tmp=tmp_path) for a in args]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case, work, tmp_path):
    args, needles = BAD_INPUTS[case]
    assert_user_error(run(*expand(args, work, tmp_path)), *needles)


@pytest.mark.parametrize("case", ["preset without weights", "missing FASTA", "truncated checkpoint"])
def test_debug_env_lets_the_exception_through(case, work, tmp_path):
    args, _ = BAD_INPUTS[case]
    result = run(*expand(args, work, tmp_path), env={"EVO2LITE_DEBUG": "1"})
    assert result.exit_code not in (0, 2)
    assert isinstance(result.exception, Evo2LiteError)
    assert result.exc_info is not None and result.exc_info[2] is not None  # a traceback to show


def test_importing_the_cli_does_not_import_torch():
    # `evo2lite --help` must stay instant: heavy imports live inside the commands
    code = "import sys, evo2lite.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- issue #9: one CLI contract ---------------------------------------------------------------------------

def test_version_short_help_and_one_line_usage_errors(work):
    from evo2lite import __version__

    assert assert_ok(run("--version")).stdout.strip() == f"evo2lite {__version__}"
    assert "score [OPTIONS]" in " ".join(assert_ok(run("score", "-h")).stdout.split())
    for args, needle in ((["score", work / "clean.fa", "--batch-size", "x"], "--batch-size"),
                         (["score", work / "clean.fa", "--nope"], "--nope"), (["bogus"], "bogus"),
                         (["score", work / "clean.fa", "--threads", "0"], "--threads must be at least 1"),
                         (["score", work / "clean.fa", "--threads", "-1"], "--threads"),
                         (["generate", "-n", "3", "-p", "ACGT", "--top-p", "0"], "--top-p"),
                         (["score", work / "clean.fa", "--device", "gpu"], "--device")):
        result = run(*args)
        assert_user_error(result, needle)
        assert "╭" not in result.output


def test_score_device_auto_stdin_and_non_dna_warning(work):
    fasta = (work / "clean.fa").read_text()
    want = assert_ok(run("score", work / "clean.fa", "--model", work / "debug_model")).stdout
    got = CliRunner().invoke(app, ["score", "-", "--model", str(work / "debug_model"), "--device", "auto",
                                   "--threads", "1"], input=fasta)
    assert got.exit_code == 0 and got.stdout == want and got.stderr == ""
    protein = ">p\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQ\n"
    got = CliRunner().invoke(app, ["score", "-", "--model", str(work / "debug_model")], input=fasta + protein)
    assert got.exit_code == 0 and len(got.stderr.splitlines()) == 1
    assert "1 of 3 record(s) do not look like DNA" in got.stderr
