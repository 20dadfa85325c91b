"""Phylogenetic tags (evo2lite/tags.py): building and checking them, `evo2lite tag`, and --tag on score and
generate as context only (against plain forward passes / untagged runs of the tagged text)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from evo2lite.cli import app
from evo2lite.tags import TagError, build_tag, check_tag, trained_with_tags
from evo2lite.tokenizer import encode

LAMBDA = Path(__file__).resolve().parents[2] / "data" / "fixtures" / "lambda.fa"
ECOLI = ("|d__Bacteria;p__Pseudomonadota;c__Gammaproteobacteria;o__Enterobacterales;f__Enterobacteriaceae;"
         "g__Escherichia;s__Escherichia coli|")


@pytest.fixture(scope="module")
def shipped():
    from evo2lite import load_model

    return load_model(None)


def test_build_tag_from_lineages():
    lineage = "Bacteria;Pseudomonadota;Gammaproteobacteria;Enterobacterales;Enterobacteriaceae;Escherichia;" \
              "Escherichia coli"
    assert build_tag(lineage) == ECOLI
    assert build_tag(" d__Bacteria; p__Pseudomonadota ") == "|d__Bacteria;p__Pseudomonadota|"  # GTDB style
    assert build_tag("|Archaea;;Methanococci|") == "|d__Archaea;p__;c__Methanococci|"
    assert check_tag(build_tag(lineage)) == ECOLI
    for bad, message in [("", "empty"), ("a;b;c;d;e;f;g;h", "at most 7"), ("d__Bacteria;c__X", "phylum"),
                         ("Bac|teria", "'|'")]:
        with pytest.raises(TagError, match=message):
            build_tag(bad)


@pytest.mark.parametrize("tag,message", [("d__Bacteria", "a tag is"), ("|p__X|", "d__NAME"),
                                         ("|d__Bacteria;c__X|", "p__NAME"), ("|d__A;p__B|x|", "p__NAME")])
def test_check_tag_rejects_malformed(tag, message):
    with pytest.raises(TagError, match=message):
        check_tag(tag)


def test_tag_command_and_warning(shipped, capsys):
    result = CliRunner().invoke(app, ["tag", "Bacteria;Pseudomonadota"])
    assert result.exit_code == 0 and result.stdout.strip() == "|d__Bacteria;p__Pseudomonadota|"
    bad = CliRunner().invoke(app, ["tag", "a;b;c;d;e;f;g;h"])
    assert bad.exit_code == 2 and "at most 7" in bad.output and "Traceback" not in bad.output
    assert not trained_with_tags(shipped)  # evo2lite-small: trained without tags
    check_tag(ECOLI, shipped)
    assert "not trained with phylogenetic tags" in capsys.readouterr().err

    class Named:  # the official checkpoints' configs are named evo2_*
        config = type("C", (), {"name": "evo2_7b"})()

    check_tag(ECOLI, Named())
    assert capsys.readouterr().err == ""


def test_score_with_a_tag_scores_the_same_positions(shipped):
    from evo2lite.apps.score import score_sequences

    seqs = [("a", "ACGTTGCAGGCTTAACCGGT" * 3), ("b", "GGGATTACAT")]
    tagged = score_sequences(shipped, seqs, batch_size=2, tag=ECOLI)
    for (name, seq), got in zip(seqs, tagged):
        ids = encode(ECOLI + seq)
        with torch.inference_mode():
            logp = torch.log_softmax(shipped(ids[None])[0].double(), -1)
        terms = logp[:-1].gather(-1, ids[1:, None]).squeeze(-1).numpy()
        expected = terms[len(ECOLI):]  # positions 1.. of the record; the tag and base 0 unscored
        assert np.isnan(got.per_position[0])
        np.testing.assert_allclose(got.per_position[1:], expected, rtol=1e-4, atol=1e-5)
        assert got.sum_logprob == pytest.approx(float(expected.sum()), rel=1e-4)
    # long records: every sliding window gets the tag (context 32 < 60 bases)
    windowed = score_sequences(shipped, seqs[:1], context=32, tag=ECOLI)[0]
    assert np.isfinite(windowed.per_position[1:]).all() and windowed.length == 60


def test_score_cli_tag(tmp_path):
    out, fasta = tmp_path / "s.tsv", tmp_path / "lambda_head.fa"
    fasta.write_text("".join(LAMBDA.read_text().splitlines(keepends=True)[:4]))  # header + 3 lines of lambda
    result = CliRunner().invoke(app, ["score", str(fasta), "--context", "64", "-o", str(out), "--tag", ECOLI])
    assert result.exit_code == 0, result.output
    assert f"#evo2lite_tag={ECOLI}" in out.read_text() and "not trained with phylogenetic tags" in result.output
    bad = CliRunner().invoke(app, ["score", str(fasta), "-o", str(tmp_path / "x.tsv"), "--tag", "Bacteria"])
    assert bad.exit_code == 2 and "--tag 'Bacteria'" in bad.output and not (tmp_path / "x.tsv").exists()


def test_generate_with_a_tag_is_generation_after_tag_plus_prompt(shipped):
    from evo2lite.apps.generate import generate

    tagged = generate("ACGTAC", 12, model=shipped, temperature=0, tag=ECOLI)[0]
    plain = generate(ECOLI + "ACGTAC", 12, model=shipped, temperature=0)[0]
    assert tagged.prompt == "ACGTAC"  # the tag is not part of the record
    assert tagged.text == plain.text and len(tagged.text) == 12
    with pytest.raises(TagError):
        generate("ACGT", 4, model=shipped, tag="|x|")


@pytest.mark.parametrize("mode", [dict(chunk_size=16), dict(batch_size=2, chunk_size=64),
                                  dict(window_mode=True, chunk_size=64)])
def test_embed_with_a_tag_drops_the_tag_rows(shipped, mode):
    """Per-token embeddings with a tag are the rows of tag + record from the record's first base on: exact
    streaming (chunks of 16), batched short records, and window mode (one window per record here)."""
    from evo2lite.apps.embed import embed

    seqs = ["ACGTTGCAGGCTTAACCGGTATAT", "GGGATTACATTT"]
    with torch.inference_mode():  # the reference: one plain forward pass of tag + record
        expected = []
        for s in seqs:
            capture = {"blocks.3": None}
            shipped.hidden_states(encode(ECOLI + s)[None], capture=capture)
            expected.append(capture["blocks.3"][0])
    got = embed(shipped, seqs, layers="blocks.3", tag=ECOLI, **mode)
    for e, g, s in zip(expected, got, seqs):
        assert g.shape == (len(s), shipped.config.d_model)
        np.testing.assert_allclose(g, e[len(ECOLI):].float().numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("command", [["generate", "-p", "ACGT", "-n", "4", "-o", "{tmp}/g.fa"],
                                     ["embed", str(LAMBDA), "-o", "{tmp}/e.npz"]])
def test_bad_tag_is_one_line_exit_2(tmp_path, command):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    result = CliRunner().invoke(app, [*args, "--tag", "|d__Bacteria;x__y|"])
    assert result.exit_code == 2 and "p__NAME" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_generate_cli_tag(tmp_path):
    out = tmp_path / "g.fa"
    result = CliRunner().invoke(app, ["generate", "-p", "ACGTAC", "-n", "8", "--seed", "1", "-o", str(out),
                                      "--tag", ECOLI, "--include-prompt"])
    assert result.exit_code == 0, result.output
    header, body = out.read_text().splitlines()[:2]
    assert body.startswith("ACGTAC") and len(body) == 14 and "|" not in body  # no tag in the output
