"""`evo2lite score-vcf` end to end: real VCF + real reference (data/examples, GRCh37 chr20), the real
model code with tiny random weights (preset "debug"), driven through typer's CliRunner or the API."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pysam
import pytest
import torch

from evo2lite.apps import score_vcf_jobs as J
from evo2lite.apps import score_vcf_sites as sites
from evo2lite.apps.score import token_logprobs
from evo2lite.apps.score_vcf import score_variants
from evo2lite.pipelines import vcf as V
from evo2lite.pipelines.fasta import ReferenceGenome
from evo2lite.pipelines.windows import reverse_complement
from evo2lite.tokenizer import encode
from helpers import EXAMPLE_REF as REF, EXAMPLE_VCF as VCF, invoke_score_vcf, vcf_body

NUM_RECORDS, NUM_ALTS = 76, 77
WINDOW = "128"

# the model / model_dir fixtures: tests/conftest.py

def invoke(model_dir, *args, input=None):
    return invoke_score_vcf(model_dir, *args, window=WINDOW, input=input)


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- the main job ----------------------------------------------------------------------------------

def test_example_to_indexed_vcf_and_table(model_dir, tmp_path):
    out, table = tmp_path / "out.vcf.gz", tmp_path / "out.tsv"
    result = invoke(model_dir, VCF, "--reference", REF, "-o", out, "--table", table)
    assert result.exit_code == 0, result.stderr
    assert files_in(tmp_path) == {"out.vcf.gz", "out.vcf.gz.tbi", "out.tsv"}  # no temp files, no checkpoint
    with pysam.VariantFile(str(out)) as vf:
        header = str(vf.header)
        records = list(vf)
        assert len(list(vf.fetch("20", 1546000, 1547000))) == 5  # the index works
    with pysam.VariantFile(str(VCF)) as vf:
        inputs = list(vf)
    assert [(r.pos, r.ref, r.alts) for r in records] == [(r.pos, r.ref, r.alts) for r in inputs]
    for key in ("version", "model", "window=128", "strand=forward", "reduce=sum", "fingerprint"):
        assert f"##evo2lite_{key}" in header
    assert "##INFO=<ID=EVO2_SCORE,Number=A,Type=Float" in header
    statuses = [s for r in records for s in r.info["EVO2_STATUS"]]
    assert statuses.count("ok") == NUM_ALTS - 1 and statuses.count("ref_mismatch") == 1
    frame = pd.read_csv(table, sep="\t", comment="#")
    assert list(frame.columns) == ["chrom", "pos", "id", "ref", "alt", "score", "status"]
    assert len(frame) == NUM_ALTS
    assert frame["pos"].tolist() == [r.pos for r in inputs for _ in r.alts]  # 1-based VCF POS
    vcf_scores = [s for r in records for s in r.info["EVO2_SCORE"]]
    ok = frame["status"] == "ok"
    assert frame.loc[ok, "score"].tolist() == pytest.approx([s for s in vcf_scores if s is not None], rel=1e-5)
    assert frame.loc[~ok, "score"].isna().all()
    assert "76 records, 77 ALTs: ok 76, ref_mismatch 1" in result.stderr


def _full_window_logliks(model, windows: list[str]) -> list[float]:
    """Each window's log-likelihood from one plain forward pass over the whole window (no state, no
    prefix sharing); the windows have equal length, so they batch without padding."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(windows), 64):
            ids = torch.stack([encode(w) for w in windows[i: i + 64]])
            out += token_logprobs(model(ids), ids).double().sum(-1).tolist()
    return out


@pytest.mark.parametrize("window, reduce, strand", [(128, "sum", "forward"), (101, "mean", "both")])
def test_prefix_sharing_equals_independent_full_windows(model, window, reduce, strand):
    result = score_variants(VCF, REF, model=model, window=window, reduce=reduce, strand=strand,
                            batch_size=8, progress=False, threads=1)
    ok = result.table[result.table["status"] == "ok"]
    assert len(ok) == NUM_ALTS - 1
    ref = ReferenceGenome(REF)
    pairs = []
    for row in ok.itertuples():
        start = V.to_zero_based(row.pos)
        site = V.site_context(lambda s, e: ref.fetch("20", s, e), ref.contigs["20"], start, window, len(row.ref))
        ref_w, alt_w = V.allele_windows(site, row.ref, row.alt)
        assert len(ref_w) == len(alt_w) == window
        pairs.append((ref_w, alt_w))
    strands = [lambda w: w] + ([reverse_complement] if strand == "both" else [])
    expected = [0.0] * len(pairs)
    for orient in strands:
        ll = _full_window_logliks(model, [orient(w) for pair in pairs for w in pair])
        for i in range(len(pairs)):
            delta = ll[2 * i + 1] - ll[2 * i]
            expected[i] += (delta / (window - 1) if reduce == "mean" else delta) / len(strands)
    assert ok["score"].tolist() == pytest.approx(expected, abs=2e-4 if reduce == "sum" else 2e-6, rel=1e-4)


def test_one_prefix_and_ref_per_site_across_records(model, monkeypatch):
    jobs = []
    real = J.run_jobs

    def spy(model_, batch_jobs, batch_size):
        jobs.extend(batch_jobs)
        return real(model_, batch_jobs, batch_size)

    monkeypatch.setattr(J, "run_jobs", spy)
    score_variants(VCF, REF, model=model, window=64, progress=False, threads=1)
    # 75 scorable records at 71 positions; the 5 records at 20:1546804 make one job: REF + 5 ALTs.
    assert len(jobs) == 71
    assert sorted(len(j.suffixes) for j in jobs)[-1] == 6
    assert all(len(j.prefix) >= 32 for j in jobs)  # everything before the variant runs once


# --- outputs ---------------------------------------------------------------------------------------

def test_stdout_and_stdin(model_dir, tmp_path):
    plain = tmp_path / "in.vcf"
    plain.write_bytes(gzip.decompress(VCF.read_bytes()))
    result = invoke(model_dir, "-", "--reference", REF, "-o", "-", input=plain.read_bytes())
    assert result.exit_code == 0, result.stderr
    body = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert len(body) == NUM_RECORDS and all("EVO2_STATUS=" in line for line in body)
    assert not list(tmp_path.glob("*.evo2lite-ckpt")) and not list(Path.cwd().glob("*.evo2lite-ckpt"))


def test_parquet_table_and_plain_gzip_input(model_dir, tmp_path):
    plain_gz = tmp_path / "in.vcf.gz"
    plain_gz.write_bytes(gzip.compress(gzip.decompress(VCF.read_bytes())))
    result = invoke(model_dir, plain_gz, "--reference", REF, "--table", tmp_path / "t.parquet")
    assert result.exit_code == 0, result.stderr
    assert "plain gzip" in result.stderr and "bgzip" in result.stderr
    frame = pd.read_parquet(tmp_path / "t.parquet")
    assert len(frame) == NUM_ALTS and frame["pos"].dtype.kind == "i"


def test_existing_output_needs_force(model_dir, tmp_path):
    out = tmp_path / "out.vcf"
    assert invoke(model_dir, VCF, "--reference", REF, "-o", out).exit_code == 0
    again = invoke(model_dir, VCF, "--reference", REF, "-o", out)
    assert again.exit_code == 2 and "--force" in again.stderr
    assert invoke(model_dir, VCF, "--reference", REF, "-o", out, "--force").exit_code == 0


def test_header_only_vcf(model_dir, tmp_path):
    src = tmp_path / "h.vcf"
    src.write_text("".join(line for line in gzip.decompress(VCF.read_bytes()).decode().splitlines(True)
                           if line.startswith("#")))
    result = invoke(model_dir, src, "--reference", REF, "-o", tmp_path / "o.vcf", "--table", tmp_path / "o.tsv")
    assert result.exit_code == 0, result.stderr
    text = (tmp_path / "o.vcf").read_text()
    assert text.endswith("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n") and "EVO2_SCORE" in text
    assert len(pd.read_csv(tmp_path / "o.tsv", sep="\t", comment="#")) == 0


def test_regions(model_dir, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("20\t1546000\t1552000\n")
    for spec, expected in ((["-r", "20:1546001-1552000"], 6), (["-R", bed], 6), (["-r", "chr20:1546804-1546804"], 5)):
        out = tmp_path / "o.vcf"
        result = invoke(model_dir, VCF, "--reference", REF, "-o", out, *spec, "--force")
        assert result.exit_code == 0, result.stderr
        assert len(vcf_body(out)) == expected, spec


def test_contig_alias_clipping_soft_mask_and_gzip_reference(model, tmp_path):
    # A small reference with contig "chrM" (lower-case half) against VCF names MT; variants at both ends.
    seq = "".join("ACGT"[(i * 5 + i // 7) % 4] for i in range(300))
    masked = seq[:150].lower() + seq[150:]
    records = [(1, seq[0], "G" if seq[0] != "G" else "A"), (150, seq[149], "T" if seq[149] != "T" else "C"),
               (298, seq[297:300], seq[297]), (300, seq[299], seq[299] + "AAA")]
    vcf = tmp_path / "mt.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=MT,length=300>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "".join(f"MT\t{p}\t.\t{r}\t{a}\t.\t.\t.\n" for p, r, a in records))
    scores = []
    for name, text in (("upper.fa", seq), ("lower.fa.gz", masked)):  # plain gzip: recompressed to BGZF
        fasta = tmp_path / name
        data = f">chrM\n{text}\n".encode()
        fasta.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        result = score_variants(vcf, fasta, model=model, window=64, progress=False, threads=1)
        assert result.table["status"].tolist() == ["ok"] * 4
        scores.append(result.table["score"].tolist())
    assert scores[0] == scores[1]


def test_record_level_problems_are_kept_and_marked(model, tmp_path, capsys):
    seq = "ACGT" * 100
    fasta = tmp_path / "r.fa"
    fasta.write_text(f">1\n{seq}\n>2\n{'N' * 200}\n")
    lines = [f"1\t{p}\t.\t{'T' if seq[p - 1] != 'T' else 'A'}\tC\t.\t.\t." for p in range(10, 200, 10)]  # 19 mismatches
    lines += ["1\t5\t.\tA\t<DEL>\t.\t.\t.", "1\t6\t.\tC\t*\t.\t.\t.", "1\t7\t.\tG\t.\t.\t.\t.",
              "1\t8\t.\tT\tR\t.\t.\t.", "1\t9\t.\tA\tA]1:5]\t.\t.\t.", "3\t5\t.\tA\tC\t.\t.\t.",
              "2\t100\t.\tN\tA\t.\t.\t.", "1\t400\t.\tTA\tT\t.\t.\t."]
    vcf = tmp_path / "p.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n##contig=<ID=1,length=999>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   + "\n".join(lines) + "\n")
    result = score_variants(vcf, fasta, model=model, window=32, progress=False, out=tmp_path / "o.vcf", threads=1,
                            keep_table=True)
    assert result.table["status"].tolist() == ["ref_mismatch"] * 19 + [
        "symbolic", "star", "missing_alt", "iupac", "breakend", "contig_absent", "n_at_variant", "out_of_range"]
    assert len(vcf_body(tmp_path / "o.vcf")) == len(lines)
    err = capsys.readouterr().err
    assert "genome build" in err and "19 of 20 records" in err
    assert "##contig 1 has length 999" in err


# --- errors ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing_vcf", "missing_ref", "bad_window", "bad_reduce", "truncated",
                                  "bad_record", "no_output", "bad_suffix"])
def test_file_level_errors_exit_2_with_one_line_and_no_output(model_dir, tmp_path, case):
    vcf, ref, extra = VCF, REF, []
    if case == "missing_vcf":
        vcf = tmp_path / "absent.vcf"
    elif case == "missing_ref":
        ref = tmp_path / "absent.fa"
    elif case == "bad_window":
        extra = ["--window", "15"]
    elif case == "bad_reduce":
        extra = ["--reduce", "max"]
    elif case == "truncated":
        vcf = tmp_path / "cut.vcf.gz"
        vcf.write_bytes(VCF.read_bytes()[:1500])
    elif case == "bad_record":
        vcf = tmp_path / "bad.vcf"
        lines = gzip.decompress(VCF.read_bytes()).decode().splitlines(True)
        lines[40] = "20\tnot_a_position\t.\tA\tC\t.\t.\t.\n"
        vcf.write_text("".join(lines))
    outputs = [] if case == "no_output" else ["-o", tmp_path / "o.vcf.gz", "--table", tmp_path / "o.tsv"]
    if case == "bad_suffix":
        outputs = ["-o", tmp_path / "o.bcf"]
    before = files_in(tmp_path)
    result = invoke(model_dir, vcf, "--reference", ref, *outputs, *extra)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evo2lite: error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert files_in(tmp_path) == before
    if case == "bad_record":
        assert f"{vcf}: line 41:" in lines[0]
    if case in ("missing_vcf", "missing_ref", "truncated"):
        assert str(vcf if case != "missing_ref" else ref) in lines[0]


# --- resume and shards -----------------------------------------------------------------------------

def interrupt_after(monkeypatch, blocks: int):
    calls = {"n": 0}
    real = sites.score_block

    def flaky(block, ctx):
        if calls["n"] == blocks:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(block, ctx)

    monkeypatch.setattr(sites, "score_block", flaky)


def test_resume_is_byte_identical_to_uninterrupted(model_dir, tmp_path, monkeypatch):
    args = ["--reference", REF, "--batch-size", "2", "--strand", "both"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = invoke(model_dir, VCF, *args, "-o", tmp_path / "a/out.vcf.gz", "--table", tmp_path / "a/out.tsv")
    assert full.exit_code == 0, full.stderr

    interrupt_after(monkeypatch, blocks=3)
    cut = invoke(model_dir, VCF, *args, "-o", tmp_path / "b/out.vcf.gz", "--table", tmp_path / "b/out.tsv")
    assert cut.exit_code == 130 and "--resume" in cut.stderr
    assert files_in(tmp_path / "b") == {"out.vcf.gz.evo2lite-ckpt"}  # outputs appear only when complete
    monkeypatch.undo()

    again = invoke(model_dir, VCF, *args, "-o", tmp_path / "b/out.vcf.gz", "--table", tmp_path / "b/out.tsv")
    assert again.exit_code == 2 and "--resume" in again.stderr  # a checkpoint is not silently discarded
    changed = invoke(model_dir, VCF, *args, "--window", "96", "-o", tmp_path / "b/out.vcf.gz",
                     "--table", tmp_path / "b/out.tsv", "--resume")
    assert changed.exit_code == 2 and "differ" in changed.stderr

    resumed = invoke(model_dir, VCF, *args, "-o", tmp_path / "b/out.vcf.gz", "--table", tmp_path / "b/out.tsv",
                     "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert files_in(tmp_path / "b") == files_in(tmp_path / "a") == {"out.vcf.gz", "out.vcf.gz.tbi", "out.tsv"}
    for name in ("out.vcf.gz", "out.vcf.gz.tbi", "out.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    done = invoke(model_dir, VCF, *args, "-o", tmp_path / "b/out.vcf.gz", "--table", tmp_path / "b/out.tsv",
                  "--resume")
    assert done.exit_code == 0 and "already complete" in done.stderr
    other = invoke(model_dir, VCF, *args, "--window", "96", "-o", tmp_path / "b/out.vcf.gz",
                   "--table", tmp_path / "b/out.tsv", "--resume")
    assert other.exit_code == 2 and "--force" in other.stderr


def test_resume_without_checkpoint_starts_fresh(model_dir, tmp_path):
    result = invoke(model_dir, VCF, "--reference", REF, "-o", tmp_path / "o.vcf", "--resume")
    assert result.exit_code == 0, result.stderr
    assert len(vcf_body(tmp_path / "o.vcf")) == NUM_RECORDS


def test_shards_merge_in_input_order_byte_identical(model, tmp_path):
    kw = dict(model=model, window=64, batch_size=2, progress=False, threads=1)
    score_variants(VCF, REF, out=tmp_path / "single.vcf.gz", **kw)
    shard = tmp_path / "shard.vcf.gz"
    # rank 1 first: it writes its part and returns; rank 0 then scores its blocks and merges both
    assert score_variants(VCF, REF, out=shard, rank=1, world_size=2, **kw).table is None
    assert not shard.exists()
    merged = score_variants(VCF, REF, out=shard, rank=0, world_size=2, keep_table=True, **kw)
    assert len(merged.table) == NUM_ALTS
    assert shard.read_bytes() == (tmp_path / "single.vcf.gz").read_bytes()
    assert not (tmp_path / "shard.vcf.gz.evo2lite-ckpt").exists()


def test_bcf_input(model, tmp_path):
    bcf = tmp_path / "in.bcf"
    with pysam.VariantFile(str(VCF)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as out:
        for rec in src:
            out.write(rec)
    a = score_variants(bcf, REF, model=model, window=64, progress=False, threads=1).table
    b = score_variants(VCF, REF, model=model, window=64, progress=False, threads=1).table
    pd.testing.assert_frame_equal(a, b)


def test_read_only_reference_folder(model, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(REF, folder / REF.name)  # no .fai/.gzi beside it, and the folder is read-only
    folder.chmod(0o555)
    try:
        result = score_variants(VCF, folder / REF.name, model=model, window=64, progress=False, threads=1)
    finally:
        folder.chmod(0o755)
    assert (result.table["status"] == "ok").sum() == NUM_ALTS - 1
