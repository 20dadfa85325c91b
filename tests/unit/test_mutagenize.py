"""Saturation mutagenesis (evo2lite/apps/mutagenize.py) against score-vcf on a VCF of the same SNVs, with the
shipped model, and against a plain forward pass for the site score; output table, statuses, CLI errors."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from evo2lite.apps.mutagenize import mutagenize
from evo2lite.apps.score_vcf import score_variants
from evo2lite.tokenizer import encode

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"

LAMBDA = FIXTURES / "lambda.bgzf.fa.gz"
CONTIG = "gi|9626243|ref|NC_001416.1|"
W = 64


@pytest.fixture(scope="module")
def shipped():
    from evo2lite import load_model

    return load_model(None)


def _score_vcf(rows, reference, model, tmp_path, **options) -> list[float]:
    """score-vcf's scores of the same SNVs, written as a VCF."""
    vcf = tmp_path / "snvs.vcf"
    lines = ["##fileformat=VCFv4.2", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{r.chrom}\t{r.pos}\t.\t{r.ref}\t{r.alt}\t.\t.\t." for r in rows]
    vcf.write_text("\n".join(lines) + "\n")
    table = score_variants(str(vcf), reference, model=model, progress=False, batch_size=7, **options).table
    assert list(table["pos"]) == [r.pos for r in rows] and list(table["alt"]) == [r.alt for r in rows]
    assert list(table["status"]) == [r.status for r in rows]
    return list(table["score"])


@pytest.mark.parametrize("region,reduce", [(f"{CONTIG}:1-6", "sum"), (f"{CONTIG}:20001-20012", "mean"),
                                           (f"{CONTIG}:48495-48502", "sum")])
def test_tile_1_equals_score_vcf(shipped, tmp_path, region, reduce):
    """Contig start (clipped windows, an unscored first base), middle, contig end (clipped on the right)."""
    rows = mutagenize(LAMBDA, region, model=shipped, window=W, reduce=reduce, progress=False)
    start, end = (int(x) for x in region.rsplit(":", 1)[1].split("-"))
    assert [r.pos for r in rows] == [p for p in range(start, end + 1) for _ in range(3)]
    assert all(r.alt != r.ref and r.status == "ok" for r in rows)
    expected = _score_vcf(rows, LAMBDA, shipped, tmp_path, window=W, reduce=reduce)
    for r, e in zip(rows, expected):
        assert r.score == pytest.approx(e, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("region", [f"{CONTIG}:1-4", f"{CONTIG}:12001-12006", f"{CONTIG}:48499-48502"])
def test_deletions_equal_score_vcf(shipped, tmp_path, region):
    """--deletions: one VCF-style 1-bp deletion per base with a base before it, score-vcf's score; with
    tile > 1 the SNVs share work, the deletions stay exact."""
    rows = mutagenize(LAMBDA, region, model=shipped, window=W, deletions=True, tile=3, progress=False)
    dels = [r for r in rows if len(r.ref) == 2]
    start, end = (int(x) for x in region.rsplit(":", 1)[1].split("-"))
    assert [r.pos for r in dels] == list(range(max(start, 2) - 1, end))  # POS: the base before
    assert all(r.alt == r.ref[0] and r.status == "ok" and math.isnan(r.site) for r in dels)
    assert len(rows) == len(dels) + 3 * (end - start + 1)
    assert [r.pos for r in rows] == sorted(r.pos for r in rows)
    for r, e in zip(dels, _score_vcf(dels, LAMBDA, shipped, tmp_path, window=W)):
        assert r.score == pytest.approx(e, rel=1e-5, abs=1e-5)


def test_tiles_equal_score_vcf_where_the_stream_starts_at_the_window(shipped, tmp_path):
    """tile > 1: exact where the window is clipped by the contig start and at each tile's first position;
    elsewhere the longer left context changes the score a little (never identical to the bit)."""
    rows = mutagenize(LAMBDA, f"{CONTIG}:1-{W // 2}", model=shipped, window=W, tile=5, progress=False)
    for r, e in zip(rows, _score_vcf(rows, LAMBDA, shipped, tmp_path, window=W)):
        assert r.score == pytest.approx(e, rel=1e-5, abs=1e-5)
    first = 30001
    rows = mutagenize(LAMBDA, f"{CONTIG}:{first}-{first + 7}", model=shipped, window=W, tile=4, progress=False)
    expected = _score_vcf(rows, LAMBDA, shipped, tmp_path, window=W)
    exact = [(r.pos - first) % 4 == 0 for r in rows]
    for r, e, is_exact in zip(rows, expected, exact):
        if is_exact:
            assert r.score == pytest.approx(e, rel=1e-5, abs=1e-5)
    assert max(abs(r.score - e) for r, e, x in zip(rows, expected, exact) if not x) > 1e-4


def test_downstream_and_site_against_a_plain_forward(shipped):
    """downstream=D sums the terms of [s, s+D]; site = log P(ALT) - log P(REF) at s; both from one forward
    pass of each full window (a reference independent of the jobs machinery)."""
    from evo2lite.pipelines.fasta import ReferenceGenome

    ref = ReferenceGenome(LAMBDA)
    first, last, D = 9001, 9004, 5
    rows = mutagenize(LAMBDA, f"{CONTIG}:{first}-{last}", model=shipped, window=W, tile=2, downstream=D,
                      progress=False)
    assert len(rows) == 3 * (last - first + 1)
    for r in rows:
        s = r.pos - 1
        a = first - 1 + 2 * ((s - first + 1) // 2)  # the tile's first position
        ws = a - W // 2
        seq = ref.fetch(CONTIG, ws, s + D + 1).upper()
        alt_seq = seq[: s - ws] + r.alt + seq[s - ws + 1:]
        with torch.inference_mode():
            logp = [torch.log_softmax(shipped(encode(x)[None])[0].double(), -1) for x in (seq, alt_seq)]
        terms = [lp[:-1].gather(-1, encode(x)[1:, None]).squeeze(-1) for lp, x in zip(logp, (seq, alt_seq))]
        i = s - ws - 1  # terms[i] scores position s
        assert r.score == pytest.approx(float(terms[1][i:].sum() - terms[0][i:].sum()), rel=1e-4, abs=1e-5)
        assert r.site == pytest.approx(float(logp[0][i, encode(r.alt)[0]] - logp[0][i, encode(r.ref)[0]]),
                                       rel=1e-4, abs=1e-5)


def test_reverse_strand_is_score_vcf_reverse_complement_half(shipped, tmp_path):
    """score-vcf --strand both averages the forward and reverse-complement deltas, so its RC delta is
    2 * both - forward: mutagenize --strand reverse must give exactly that (contig start and middle)."""
    for region in (f"{CONTIG}:1-5", f"{CONTIG}:15001-15009"):
        forward = mutagenize(LAMBDA, region, model=shipped, window=W, progress=False)
        reverse = mutagenize(LAMBDA, region, model=shipped, window=W, strand="reverse", progress=False)
        assert [(r.pos, r.ref, r.alt) for r in reverse] == [(r.pos, r.ref, r.alt) for r in forward]
        assert {r.strand for r in reverse} == {"-"} and {r.strand for r in forward} == {"+"}
        both = _score_vcf(forward, LAMBDA, shipped, tmp_path, window=W, strand="both")
        for f, r, b in zip(forward, reverse, both):
            assert r.score == pytest.approx(2 * b - f.score, rel=1e-5, abs=2e-5)


@pytest.mark.parametrize("kind", ["bed", "gtf"])
def test_transcript_strand_from_an_annotation(shipped, tmp_path, kind):
    """Positions inside a '-' transcript only are scored on the reverse complement, the rest forward."""
    if kind == "bed":
        text = f"{CONTIG}\t15002\t15005\ttx1\t0\t-\nother\t0\t99999\ttx2\t0\t-\n" \
               f"{CONTIG}\t15006\t15008\ttx3\t0\t-\n{CONTIG}\t15007\t15020\ttx4\t0\t+\n"
    else:  # 1-based inclusive; only transcript lines count
        text = f"{CONTIG}\tx\ttranscript\t15003\t15005\t.\t-\t.\tgene_id \"g\";\n" \
               f"{CONTIG}\tx\texon\t15001\t15009\t.\t-\t.\tgene_id \"g\";\n" \
               f"{CONTIG}\tx\ttranscript\t15007\t15008\t.\t-\t.\tgene_id \"g\";\n" \
               f"{CONTIG}\tx\ttranscript\t15008\t15020\t.\t+\t.\tgene_id \"g\";\n"
    annotation = tmp_path / f"tx.{kind}"
    annotation.write_text(text)
    region = f"{CONTIG}:15001-15009"
    rows = mutagenize(LAMBDA, region, model=shipped, window=W, strand="transcript", annotation=annotation,
                      progress=False)
    on_minus = {15003, 15004, 15005, 15007}  # 15008: on both strands -> forward
    assert [r.strand for r in rows] == ["-" if r.pos in on_minus else "+" for r in rows]
    forward = mutagenize(LAMBDA, region, model=shipped, window=W, progress=False)
    reverse = mutagenize(LAMBDA, region, model=shipped, window=W, strand="reverse", progress=False)
    for r, f, b in zip(rows, forward, reverse):
        assert r.score == pytest.approx((b if r.pos in on_minus else f).score, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("tile", [1, 6])
def test_site_mode_equals_the_site_column(shipped, tile):
    """--score site reads every site score off one reference pass per tile: the same numbers as the site
    column of the window mode (which takes them from the ALT rows), contig start included."""
    for region in (f"{CONTIG}:1-9", f"{CONTIG}:7001-7013"):
        window = mutagenize(LAMBDA, region, model=shipped, window=W, tile=tile, progress=False)
        site = mutagenize(LAMBDA, region, model=shipped, window=W, tile=tile, mode="site", progress=False)
        assert [(r.pos, r.alt, r.status) for r in site] == [(r.pos, r.alt, r.status) for r in window]
        assert all(math.isnan(r.score) for r in site)
        assert math.isnan(site[0].site) == math.isnan(window[0].site) == region.endswith(":1-9")
        for s, w in zip(site[3:], window[3:]):
            assert s.site == pytest.approx(w.site, rel=1e-5, abs=1e-5)


def test_n_positions_and_windows_keep_every_row(shipped, tmp_path):
    seq = "ACGTTGCAAGGCTTACCGATGCAAGTCCGTAGGATCCTAGCTAGGCATCGATCGGATCGTAG" * 3
    seq = seq[:60] + "N" + seq[61:100] + "R" + seq[101:]
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">c\n" + seq + "\n")
    rows = mutagenize(fasta, "c:55-105", model=shipped, window=16, progress=False)
    by_pos = {}
    for r in rows:
        by_pos.setdefault(r.pos, []).append(r)
    assert sorted(by_pos) == list(range(55, 106))
    assert [r.status for r in by_pos[61]] == ["n_at_variant"] * 4 and [r.alt for r in by_pos[61]] == list("ACGT")
    assert [r.status for r in by_pos[101]] == ["iupac"] * 4
    assert {r.status for r in by_pos[60]} == {"n_inside"}  # the N sits between bases of its window
    assert {r.status for r in by_pos[94]} == {"iupac_in_window"}
    assert all(math.isnan(r.score) for p in (60, 61, 94, 101) for r in by_pos[p])
    ok = [r for r in rows if r.status == "ok"]
    assert ok and all(math.isfinite(r.score) and math.isfinite(r.site) for r in ok)
    expected = _score_vcf([r for r in rows if r.status not in ("n_at_variant", "iupac")], fasta, shipped,
                          tmp_path, window=16)
    got = [r.score for r in rows if r.status not in ("n_at_variant", "iupac")]
    assert all((math.isnan(g) and math.isnan(e)) or g == pytest.approx(e, rel=1e-5, abs=1e-5)
               for g, e in zip(got, expected))


def test_bgzipped_tabix_table(shipped, tmp_path):
    import pandas as pd
    import pysam

    out = tmp_path / "scores.tsv.gz"
    rows = mutagenize(LAMBDA, f"{CONTIG}:200-230", model=shipped, window=W, out=out, progress=False)
    assert (tmp_path / "scores.tsv.gz.tbi").is_file()
    with open(out, "rb") as fh:
        assert fh.read(4) == b"\x1f\x8b\x08\x04"  # BGZF: gzip with the extra field
    table = pd.read_csv(out, sep="\t", comment="#", header=None)
    assert len(table) == len(rows) == 93
    with gzip.open(out, "rt") as fh:
        lines = fh.read().splitlines()
    assert "#evo2lite_window=64" in lines and "#chrom\tpos\tref\talt\tscore\tsite\tstatus\tstrand" in lines
    with pysam.TabixFile(str(out)) as tbx:
        hits = [line.split("\t") for line in tbx.fetch(CONTIG, 214, 215)]  # 0-based: pos 215
    assert [h[1] for h in hits] == ["215"] * 3
    assert [float(h[4]) for h in hits] == pytest.approx([r.score for r in rows if r.pos == 215], rel=1e-5)
    with pytest.raises(Exception, match="exists"):
        mutagenize(LAMBDA, f"{CONTIG}:200-201", model=shipped, window=W, out=out, progress=False)


@pytest.mark.parametrize("args,message", [
    (["-r", "nope:1-5"], "not in the reference"),
    (["-r", f"{CONTIG}:100-99999999"], "outside contig"),
    (["-r", f"{CONTIG}:100-110", "--tile", "0"], "--tile"),
    (["-r", f"{CONTIG}:100-110", "--downstream", "-1"], "--downstream"),
    (["-r", f"{CONTIG}:100-110", "--window", "8"], "--window"),
    (["-r", f"{CONTIG}:100-110", "--score", "both"], "--score"),
    (["-r", f"{CONTIG}:100-110", "--plot", "{tmp}/x.jpg"], "--plot"),
    (["-r", f"{CONTIG}:100-110", "--deletions", "--strand", "reverse"], "--deletions"),
    (["-r", f"{CONTIG}:100-110", "--strand", "transcript"], "--annotation"),
    (["-r", f"{CONTIG}:100-110", "--strand", "transcript", "--annotation", "{tmp}/none.bed"], "no such file"),
    (["-r", f"{CONTIG}:100-110", "-o", "{tmp}/x.txt"], "must end in"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    from typer.testing import CliRunner

    from evo2lite.cli import app

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.tsv.gz")]
    result = CliRunner().invoke(app, ["mutagenize", "-f", str(LAMBDA), *args, "--no-progress"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


def test_cli_writes_the_table_and_the_heatmap(tmp_path):
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    from evo2lite.cli import app

    out, png = tmp_path / "m.tsv.bgz", tmp_path / "m.png"
    result = CliRunner().invoke(app, ["mutagenize", "-f", str(LAMBDA), "-r", f"{CONTIG}:500-504", "-o", str(out),
                                      "--window", "32", "--tile", "3", "--deletions", "--plot", str(png),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.tsv.bgz.tbi").is_file() and "20 variants: ok 20" in result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heatmap_matrix(shipped):
    from evo2lite.apps.mutagenize_plot import heatmap_matrix

    rows = mutagenize(LAMBDA, f"{CONTIG}:700-705", model=shipped, window=W, deletions=True, progress=False)
    m_AP, positions, refs = heatmap_matrix(rows)
    assert positions == list(range(700, 706)) and m_AP.shape == (4, 6)
    for r in rows:
        if len(r.ref) == 1:
            assert m_AP["ACGT".index(r.alt), r.pos - 700] == r.score
    assert [math.isnan(m_AP["ACGT".index(b), i]) for i, b in enumerate(refs)] == [True] * 6
    assert int(np.isnan(m_AP).sum()) == 6
