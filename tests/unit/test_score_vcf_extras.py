"""score-vcf's site score (--score site), transcript strand (--strand transcript --annotation), phylogenetic
tags (--tag) and the bgzipped, tabix-indexed table (--table .tsv.bgz), with the shipped model on real data
(phage lambda, GRCh37 chr20 in data/), each against a plain forward pass of the model."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pysam
import pytest
import torch

from evo2lite.apps.score_vcf import score_variants
from evo2lite.pipelines import vcf as V
from evo2lite.pipelines.fasta import ReferenceGenome
from evo2lite.pipelines.windows import reverse_complement
from evo2lite.tokenizer import encode

DATA = Path(__file__).resolve().parents[2] / "data"
LAMBDA = DATA / "fixtures" / "lambda.bgzf.fa.gz"
CONTIG = "gi|9626243|ref|NC_001416.1|"
EXAMPLE_REF = DATA / "examples" / "chr20_GRCh37_example.fa.gz"
EXAMPLE_VCF = DATA / "examples" / "chr20_example.vcf.gz"
W = 64
TAG = "|d__Viruses;p__Uroviricota;c__Caudoviricetes;o__;f__;g__Lambdavirus;s__Lambdavirus lambda|"
# (1-based POS, ALT): the contig's first base (no context), near its start, the middle, a 2-base deletion
VARIANTS = [(1, "C"), (5, "T"), (9000, "A"), (9001, "G"), (9003, "del"), (20000, "C")]


@pytest.fixture(scope="module")
def shipped():
    from evo2lite import load_model

    return load_model(None)


@pytest.fixture(scope="module")
def lam():
    ref = ReferenceGenome(LAMBDA)
    return ref


def _vcf(tmp_path: Path, ref) -> tuple[Path, list[tuple[int, str, str]]]:
    rows = []
    for pos, alt in VARIANTS:
        base = ref.fetch(CONTIG, pos - 1, pos).upper()
        if alt == "del":
            rows.append((pos, ref.fetch(CONTIG, pos - 1, pos + 2).upper(), base))
        else:
            rows.append((pos, base, alt if alt != base else "A" if base != "A" else "C"))
    path = tmp_path / "lambda.vcf"
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID={CONTIG}>", "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{CONTIG}\t{p}\t.\t{r}\t{a}\t.\t.\t." for p, r, a in rows]
    path.write_text("\n".join(lines) + "\n")
    return path, rows


def _logp(model, text: str) -> torch.Tensor:
    with torch.inference_mode():
        return torch.log_softmax(model(encode(text)[None])[0].double(), -1)


def _plain(model, ref, pos: int, ref_allele: str, alt: str, rc: bool, tag: str = "") -> tuple[float, float]:
    """(window delta, site score) of one variant from plain full forward passes over (tag +) both windows."""
    contig_len = ref.contigs[CONTIG]
    site = V.site_context(lambda a, b: ref.fetch(CONTIG, a, b), contig_len, pos - 1, W, len(ref_allele))
    ref_w, alt_w = V.allele_windows(site, ref_allele, alt)
    offset = pos - 1 - site.win_start
    at = offset
    if rc:
        ref_w, alt_w = reverse_complement(ref_w), reverse_complement(alt_w)
        at = len(ref_w) - offset - 1
    totals = []
    for w in (ref_w, alt_w):
        ids = encode(tag + w)
        terms = _logp(model, tag + w)[:-1].gather(-1, ids[1:, None]).squeeze(-1)
        totals.append(float(terms[len(tag):].sum()))  # window positions 1.. (the tag and base 0 unscored)
    site_score = math.nan
    if len(ref_allele) == len(alt) == 1 and at > 0:
        lp = _logp(model, tag + ref_w[:at])[-1]
        site_score = float(lp[encode(alt_w[at])[0]] - lp[encode(ref_w[at])[0]])
    return totals[1] - totals[0], site_score


def test_site_score_and_tabix_table_against_plain_forward(shipped, lam, tmp_path):
    vcf, rows = _vcf(tmp_path, lam)
    table, out = tmp_path / "t.tsv.bgz", tmp_path / "o.vcf.gz"
    score_variants(str(vcf), LAMBDA, model=shipped, window=W, score="site", table=table, out=out, progress=False,
                   batch_size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lambda.vcf", "o.vcf.gz", "o.vcf.gz.tbi", "t.tsv.bgz",
                                                         "t.tsv.bgz.tbi"]
    frame = pd.read_csv(table, sep="\t", comment="#", compression="gzip")  # .bgz: pandas cannot guess it
    assert list(frame.columns) == ["chrom", "pos", "id", "ref", "alt", "score", "status", "site"]
    for (pos, r, a), got in zip(rows, frame.itertuples()):
        delta, site = _plain(shipped, lam, pos, r, a, rc=False)
        assert got.score == pytest.approx(delta, rel=1e-4, abs=1e-4)
        if math.isnan(site):  # the contig's first base, and the deletion: no site score
            assert math.isnan(got.site)
        else:
            assert got.site == pytest.approx(site, rel=1e-4, abs=1e-5)
    assert int(frame["site"].notna().sum()) == 4
    with pysam.TabixFile(str(table)) as tbx:  # tabix reads a position (0-based half-open query)
        hits = [line.split("\t") for line in tbx.fetch(CONTIG, 8999, 9001)]
    assert [(h[1], h[4]) for h in hits] == [("9000", rows[2][2]), ("9001", rows[3][2])]
    with pysam.VariantFile(str(out)) as vf:  # what VEP --custom format=vcf reads: Number=A INFO per ALT
        assert vf.header.info["EVO2_SITE"].number == "A" and vf.header.info["EVO2_SITE"].type == "Float"
        got = [rec.info.get("EVO2_SITE", (None,))[0] for rec in vf.fetch(CONTIG, 8999, 9001)]
    assert got == pytest.approx(frame["site"].iloc[2:4].tolist(), rel=1e-5)


@pytest.mark.parametrize("kind", ["bed", "gtf"])
def test_transcript_strand_per_site(shipped, lam, tmp_path, kind):
    """Variants inside a '-' transcript are scored on the reverse complement (delta and site), others forward;
    the strand is recorded per ALT. The '+' transcript over 20000 overlaps a '-' one: forward."""
    vcf, rows = _vcf(tmp_path, lam)
    spans = [(8990, 9010, "-", "txA"), (19990, 20010, "-", "txB"), (19995, 20005, "+", "txC")]
    if kind == "bed":
        text = "".join(f"{CONTIG}\t{a}\t{b}\t{n}\t0\t{s}\n" for a, b, s, n in spans)
    else:
        text = "".join(f'{CONTIG}\tx\ttranscript\t{a + 1}\t{b}\t.\t{s}\t.\ttranscript_id "{n}";\n'
                       f"{CONTIG}\tx\texon\t1\t50000\t.\t-\t.\t.\n" for a, b, s, n in spans)
    annotation = tmp_path / f"tx.{kind}"
    annotation.write_text(text)
    frame = score_variants(str(vcf), LAMBDA, model=shipped, window=W, strand="transcript", annotation=annotation,
                           score="site", progress=False).table
    assert frame["strand"].tolist() == ["+", "+", "-", "-", "-", "+"]
    for (pos, r, a), got in zip(rows, frame.itertuples()):
        delta, site = _plain(shipped, lam, pos, r, a, rc=got.strand == "-")
        assert got.score == pytest.approx(delta, rel=1e-4, abs=1e-4)
        assert (math.isnan(got.site) and math.isnan(site)) or got.site == pytest.approx(site, rel=1e-4, abs=1e-5)


def test_tag_is_context_only(shipped, lam, tmp_path, capsys):
    vcf, rows = _vcf(tmp_path, lam)
    frame = score_variants(str(vcf), LAMBDA, model=shipped, window=W, tag=TAG, score="site", progress=False).table
    assert "not trained with phylogenetic tags" in capsys.readouterr().err  # the shipped model
    plain = score_variants(str(vcf), LAMBDA, model=shipped, window=W, progress=False).table
    assert not frame["score"].iloc[1:].equals(plain["score"].iloc[1:])  # the tag changes the context
    for (pos, r, a), got in zip(rows, frame.itertuples()):
        delta, site = _plain(shipped, lam, pos, r, a, rc=False, tag=TAG)
        assert got.score == pytest.approx(delta, rel=1e-4, abs=1e-4)
        if not math.isnan(site):
            assert got.site == pytest.approx(site, rel=1e-4, abs=1e-5)


def test_example_vcf_table_is_tabix_indexed(shipped, tmp_path):
    """The real chr20 VCF: the .tsv.gz table is BGZF with a .tbi, one row per ALT, tabix fetches a region."""
    table = tmp_path / "ex.tsv.gz"
    result = score_variants(str(EXAMPLE_VCF), EXAMPLE_REF, model=shipped, window=32, table=table, progress=False)
    assert result.num_records == 76 and (tmp_path / "ex.tsv.gz.tbi").is_file()
    frame = pd.read_csv(table, sep="\t", comment="#", dtype={"chrom": str})
    assert len(frame) == 77
    with pysam.TabixFile(str(table)) as tbx:
        assert tbx.contigs == ["20"]
        hits = list(tbx.fetch("20", 1546000, 1547000))
    expected = frame[(frame["pos"] > 1546000) & (frame["pos"] <= 1547000)]
    assert len(hits) == len(expected) == 5


@pytest.mark.parametrize("args,message", [
    (["--strand", "transcript"], "--annotation"),
    (["--strand", "transcript", "--annotation", "{tmp}/none.bed"], "no such file"),
    (["--annotation", "{tmp}/tx.bed"], "--strand transcript"),
    (["--strand", "transcript", "--annotation", "{tmp}/bad.bed"], "bad.bed:1"),
    (["--score", "both"], "--score"),
    (["--tag", "Bacteria;Pseudomonadota"], "--tag"),
    (["--tag", "|d__Bacteria;c__Gamma|"], "p__NAME"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, message):
    from typer.testing import CliRunner

    from evo2lite.cli import app

    (tmp_path / "tx.bed").write_text(f"{CONTIG}\t1\t100\tx\t0\t-\n")
    (tmp_path / "bad.bed").write_text(f"{CONTIG}\t1\t100\n")
    vcf, _ = _vcf(tmp_path, ReferenceGenome(LAMBDA))
    before = set(tmp_path.iterdir())
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(app, ["score-vcf", str(vcf), "-f", str(LAMBDA), "--window", "32", "--table",
                                      str(tmp_path / "t.tsv.bgz"), *args, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("preset,window,on_gpu", [("evo2_7b", 8192, 2), ("evo2_40b", 8192, 1),
                                                  ("evo2_1b_base", 8192, 4), ("evo2_7b", 1024, 16)])
def test_default_batch_size_is_sized_to_the_model_on_a_gpu(preset, window, on_gpu):
    """--batch-size unset: 16 windows on a CPU; off the CPU as many as keep batch x window x width at the
    evo2_7b point measured on the H200 (2 windows of 8,192 at width 4,096). A meta-device model stands in for
    the GPU one (only its device type and width are read); an explicit value is kept."""
    from evo2lite.apps.score_vcf import _batch_size
    from evo2lite.config import PRESETS
    from evo2lite.model import StripedHyena2

    with torch.device("meta"):
        model = StripedHyena2(PRESETS[preset])
    assert _batch_size(model, window, None) == on_gpu
    assert _batch_size(model, window, 3) == 3
    assert _batch_size(StripedHyena2(PRESETS["debug"]), window, None) == 16
