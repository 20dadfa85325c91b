"""`evo2lite generate` through typer's CliRunner: FASTA out (file, atomically, or streamed to stdout),
settings in the headers, reproducible seeds, and one-line errors with exit code 2."""

from __future__ import annotations

import gzip

import pytest
import typer
from typer.testing import CliRunner

from evo2lite.apps.generate_cli import generate_command

# model_dir (the tiny random model, saved): tests/conftest.py


@pytest.fixture(scope="module")
def app():
    try:  # the real CLI once it registers the command
        from evo2lite.cli import app as real

        if any(c.name == "generate" for c in real.registered_commands):
            return real, ["generate"]
    except ImportError:
        pass
    standalone = typer.Typer()
    standalone.command()(generate_command)
    return standalone, []


def _run(app, *args):
    cli, prefix = app
    return CliRunner().invoke(cli, [*prefix, *map(str, args)])


def _records(text: str) -> list[tuple[str, str]]:
    lines = text.strip("\n").split("\n")
    assert len(lines) % 2 == 0, text
    return [(lines[i], lines[i + 1]) for i in range(0, len(lines), 2)]


def test_stdout_fasta_with_settings_in_headers(app, model_dir):
    r = _run(app, "--prompt", "|d__Bacteria;p__Pseudomonadota|ATG", "-n", 25, "--seed", 11, "--num-samples", 2,
             "--top-k", 3, "--temperature", 0.7, "--acgt-only", "--model", model_dir, "-o", "-")
    assert r.exit_code == 0, r.output
    recs = _records(r.stdout)
    assert len(recs) == 2
    for j, (header, seq) in enumerate(recs, start=1):
        assert header.startswith(f">prompt_sample{j} ")
        for field in ("n=25", "temperature=0.7", "top_k=3", "top_p=1", "seed=11", "acgt_only=true"):
            assert field in header.split()
        assert len(seq) == 25 and set(seq) <= set("ACGT")
    again = _run(app, "--prompt", "|d__Bacteria;p__Pseudomonadota|ATG", "-n", 25, "--seed", 11,
                 "--num-samples", 2, "--top-k", 3, "--temperature", 0.7, "--acgt-only", "--model", model_dir)
    assert again.stdout == r.stdout


def test_prompts_file_to_output_file(app, model_dir, tmp_path):
    fasta = tmp_path / "prompts.fa.gz"
    with gzip.open(fasta, "wt") as fh:
        fh.write(">gene1 a gene start\nATGAAACGC\nATTAGC\n>tag\n|d__Bacteria;p__Bacillota|\n>short\nA\n")
    out = tmp_path / "out.fa"
    r = _run(app, "--prompts", fasta, "-n", 12, "--seed", 1, "--model", model_dir, "-o", out,
             "--batch-size", 2, "--include-prompt")
    assert r.exit_code == 0, r.output
    recs = _records(out.read_text())
    assert [h.split()[0] for h, _ in recs] == [">gene1_sample1", ">tag_sample1", ">short_sample1"]
    assert recs[0][1].startswith("ATGAAACGCATTAGC") and len(recs[0][1]) <= 15 + 12
    assert recs[2][1].startswith("A")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fa", "prompts.fa.gz"]  # no temp left over
    again = _run(app, "--prompts", fasta, "-n", 12, "--seed", 1, "--model", model_dir, "-o", out)
    assert again.exit_code == 2 and "--force" in again.output


@pytest.mark.parametrize("args, message", [
    (["--prompt", "ACGT", "-n", 5, "--top-p", 0], "--top-p"),
    (["--prompt", "ACGT", "-n", 5, "--top-p", 1.5], "--top-p"),
    (["--prompt", "ACGT", "-n", 0], "-n"),
    (["--prompt", "ACGT", "-n", -4], "-n"),
    (["--prompt", "", "-n", 5], "empty"),
    (["--prompts", "/no/such/prompts.fa", "-n", 5], "no such file"),
    (["--prompts", "NOT_FASTA", "-n", 5], "not FASTA"),
    (["--prompts", "EMPTY_RECORD", "-n", 5], "empty"),
    (["-n", 5], "exactly one of"),
    (["--prompt", "ACGT", "--prompts", "/x.fa", "-n", 5], "exactly one of"),
    (["--prompt", "ACGT", "-n", 5, "--num-samples", 0], "--num-samples"),
    (["--prompt", "ACGT", "-n", 5, "--temperature", -1], "--temperature"),
])
def test_bad_options_one_line_exit_2(app, model_dir, tmp_path, args, message):
    (tmp_path / "bad.txt").write_text("hello\n")
    (tmp_path / "empty.fa").write_text(">e\n\n")
    args = [str(tmp_path / "bad.txt") if a == "NOT_FASTA" else str(tmp_path / "empty.fa") if a == "EMPTY_RECORD"
            else a for a in args]
    r = _run(app, *args, "--model", model_dir)
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("evo2lite: error:"), r.output


@pytest.mark.slow
def test_compile_gives_the_same_greedy_bases(app, model_dir):
    """--compile (torch.compile of the decode step) changes the speed, not the bases."""
    args = ("--prompt", "ACGTTGCA", "-n", 12, "--temperature", 0, "--model", model_dir, "-o", "-")
    plain, compiled = _run(app, *args), _run(app, *args, "--compile")
    assert plain.exit_code == 0 and compiled.exit_code == 0, compiled.output
    assert compiled.stdout.split("\n")[1] == plain.stdout.split("\n")[1] and len(plain.stdout.split("\n")[1]) == 12
