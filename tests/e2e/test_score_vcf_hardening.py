"""score-vcf hardening (issue #9): non-ACGT statuses, absent contigs, one region syntax (and the index),
table provenance, and memory flat in the number of records. Tiny random model (preset "debug")."""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from evo2lite.apps.score_vcf import score_variants
from evo2lite.pipelines import vcf as V
from helpers import EXAMPLE_REF as REF, EXAMPLE_VCF as VCF, invoke_score_vcf, vcf_body as body

HEADER = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"

# the model / model_dir fixtures: tests/conftest.py

def invoke(model_dir, *args):
    return invoke_score_vcf(model_dir, *args, window="64")


def write_vcf(path: Path, records) -> Path:
    path.write_text(HEADER + "".join(f"{c}\t{p}\t.\t{r}\t{a}\t.\t.\t.\n" for c, p, r, a in records))
    return path


# --- non-ACGT bases ----------------------------------------------------------------------------------

def test_non_acgt_bases_get_their_own_statuses(model, tmp_path):
    rng = random.Random(1)
    seq = [rng.choice("ACGT") for _ in range(600)]
    seq[150] = "R"                      # an IUPAC code in the reference
    seq[300:316] = "N" * 16             # an N run: 16 of a 64-base window = 25% N
    seq[450:453] = "NNN"                # 3 of 64 = 4.7% N, but between bases
    seq = "".join(seq)
    fasta = tmp_path / "r.fa"
    fasta.write_text(f">1\n{seq}\n")

    def alt(p):
        return "C" if seq[p - 1] != "C" else "G"

    records = [("1", 50, seq[49], "N"),            # ALT N: an unknown base, not a variant
               ("1", 60, seq[59], "Y"),            # ALT IUPAC
               ("1", 160, seq[159], alt(160)),     # window holds the R
               ("1", 250, "N", alt(250)),          # REF N matches any reference base (bcftools): scored
               ("1", 305, "N", "A"),               # on the N run itself
               ("1", 330, seq[329], alt(330)),     # window 25% N
               ("1", 345, seq[344], alt(345)),     # window [312, 376) starts in the N run: 4 N at its end
               ("1", 460, seq[459], alt(460))]     # window [427, 491) holds the NNN inside
    vcf = write_vcf(tmp_path / "n.vcf", records)
    table = score_variants(vcf, fasta, model=model, window=64, progress=False, threads=1).table
    assert table["status"].tolist() == ["n_allele", "iupac", "iupac_in_window", "ok", "n_at_variant", "n_rich", "ok",
                                        "n_inside"]
    assert table["score"].notna().tolist() == [s == "ok" for s in table["status"]]
    assert set(table["status"]) <= set(V.STATUS_DESCRIPTIONS)


# --- contigs absent from the reference ------------------------------------------------------------------

def test_all_contigs_absent_exit_2_naming_the_reference_contigs(model_dir, tmp_path):
    vcf = write_vcf(tmp_path / "x.vcf", [("chrQ", 10, "A", "C"), ("chrQ", 20, "A", "C"), ("chrZ", 5, "A", "G")])
    result = invoke(model_dir, vcf, "-f", REF, "-o", tmp_path / "o.vcf", "--table", tmp_path / "o.tsv")
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evo2lite: error: ")
    assert "chrQ (2)" in lines[0] and "chrZ (1)" in lines[0] and "which has 20" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.vcf"]  # no output, no checkpoint


def test_some_contigs_absent_warn_with_counts(model_dir, tmp_path):
    lines = [line.split("\t") for line in body(VCF)[:3]]
    vcf = write_vcf(tmp_path / "p.vcf", [(c[0], c[1], c[3], c[4]) for c in lines] + [("chrQ", 10, "A", "C")])
    result = invoke(model_dir, vcf, "-f", REF, "-o", tmp_path / "o.vcf")
    assert result.exit_code == 0, result.stderr
    assert "1 of 4 records" in result.stderr and "chrQ (1)" in result.stderr
    assert body(tmp_path / "o.vcf")[-1].rstrip().endswith("EVO2_STATUS=contig_absent")


# --- regions -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expected", [
    (["-r", "20:1,546,001-1,552,000"], 6),                                  # thousands separators
    (["-r", "20:1546001-1546804", "-r", "chr20:1546805-1552000"], 6),      # repeated options add up
    (["--regions", "20:1546804"], None),                                   # chr:pos runs to the contig end
])
def test_region_syntax(model_dir, tmp_path, args, expected):
    out = tmp_path / "o.vcf"
    result = invoke(model_dir, VCF, "-f", REF, "-o", out, *args)
    assert result.exit_code == 0, result.stderr
    everything_from = [line for line in body(VCF) if int(line.split("\t")[1]) >= 1546804]
    assert len(body(out)) == (expected or len(everything_from))


@pytest.mark.parametrize("args, words", [
    (["-r", "20:5-3"], "end 3 is before start 5"),
    (["-r", "20:0-10"], "1-based"),
    (["-r", "chrQ:1-5"], "not in the reference"),
    (["-r", "20:1-999,999,999"], "outside contig 20"),
    (["-R", "absent.bed"], "no such BED file"),
])
def test_bad_regions_exit_2_with_one_line(model_dir, tmp_path, args, words):
    result = invoke(model_dir, VCF, "-f", REF, "-o", tmp_path / "o.vcf", *args)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "o.vcf").exists()


def test_region_matching_nothing_warns(model_dir, tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text("20\t1546000\t1552000\n20\t10\t20\n")
    result = invoke(model_dir, VCF, "-f", REF, "-o", tmp_path / "o.vcf", "-R", bed)
    assert result.exit_code == 0, result.stderr
    assert len(body(tmp_path / "o.vcf")) == 6
    assert "1 of 2 regions match no record" in result.stderr and "20:11-20" in result.stderr


def test_regions_use_the_index_and_agree_with_a_scan(model, tmp_path, monkeypatch):
    kw = dict(model=model, window=64, progress=False, threads=1, regions=["20:1546001-1552000", "20:1,546,804"])
    scanned = tmp_path / "noindex.vcf.gz"
    shutil.copy(VCF, scanned)  # same bytes, no .tbi beside it
    score_variants(scanned, REF, table=tmp_path / "scan.tsv", **kw)

    def no_scan(*args, **kwargs):
        raise AssertionError("the whole file was scanned although it has an index")

    monkeypatch.setattr(V.VcfInput, "records", no_scan)
    score_variants(VCF, REF, table=tmp_path / "index.tsv", **kw)
    read = [pd.read_csv(tmp_path / name, sep="\t", comment="#") for name in ("scan.tsv", "index.tsv")]
    assert len(read[0]) > 6
    pd.testing.assert_frame_equal(read[0], read[1])


# --- provenance ----------------------------------------------------------------------------------------

def test_tables_carry_provenance(model_dir, tmp_path):
    from evo2lite import __version__

    tsv, parquet = tmp_path / "t.tsv.gz", tmp_path / "t.parquet"
    for table in (tsv, parquet):
        result = invoke(model_dir, VCF, "-f", REF, "--table", table, "--strand", "both", "--reduce", "mean")
        assert result.exit_code == 0, result.stderr
    expected = {"version": __version__, "model": model_dir, "window": "64", "strand": "both", "reduce": "mean",
                "dtype": "float32"}
    with gzip.open(tsv, "rt") as fh:
        comments = [line.rstrip("\n") for line in fh if line.startswith("#")]
    tsv_meta = dict(line[len("#evo2lite_"):].split("=", 1) for line in comments)
    parquet_meta = {k.decode()[len("evo2lite_"):]: v.decode()
                    for k, v in pq.read_schema(parquet).metadata.items() if k.startswith(b"evo2lite_")}
    for meta in (tsv_meta, parquet_meta):
        assert {k: meta.get(k) for k in expected} == expected
        assert len(meta["fingerprint"]) == 64
    frame = pd.read_csv(tsv, sep="\t", comment="#", dtype={"chrom": str, "id": str})
    pd.testing.assert_frame_equal(frame, pd.read_parquet(parquet), check_dtype=False, rtol=1e-5)


# --- memory flat in the number of records ----------------------------------------------------------

_CHILD = r"""
import json, sys
from pathlib import Path
from evo2lite import load_model
from evo2lite.apps.score_vcf import score_variants

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

folder, n = Path(sys.argv[1]), int(sys.argv[2])
fasta, vcf = folder / "r.fa", folder / "big.vcf"
fasta.write_text(">1\n" + "ACGT" * 50 + "\n")
with open(vcf, "w") as fh:
    fh.write("##fileformat=VCFv4.2\n##contig=<ID=1>\n##contig=<ID=2>\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    fh.write("".join(f"1\t{p}\t.\tA\tT,G\t.\t.\t.\n" for p in (21, 41, 61, 81, 101)))
    for start in range(0, n, 100_000):
        fh.write("".join(f"2\t{p}\trs{p}\tA\tC\t.\t.\tDP=3\n" for p in range(start + 1, min(n, start + 100_000) + 1)))
model = load_model("debug", random_init=True, seed=0)
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
except OSError:
    pass
before = status("VmRSS:")
result = score_variants(vcf, fasta, model=model, window=32, batch_size=64, progress=False, threads=1,
                        out=folder / "o.vcf.gz", table=folder / "o.tsv")
print(json.dumps({"grew": status("VmHWM:") - before, "records": result.num_records,
                  "counts": result.status_counts, "table": result.table is None}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc (Linux)")
def test_one_million_records_stream_in_bounded_memory(tmp_path):
    """1M records (all but 5 on a contig the reference lacks, so the model runs little), in a child
    process: its peak RSS during the run grows by far less than holding one result per record would
    take (the non-streaming code held every result and a table of every ALT: several hundred MB)."""
    import json
    import subprocess
    import sys

    n = 1_000_000
    child = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), str(n)], capture_output=True, text=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}, timeout=900)
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["records"] == n + 5 and report["table"]
    assert report["counts"] == {"contig_absent": n, "ok": 10}
    assert len(body(tmp_path / "o.vcf.gz")) == n + 5
    print(f"peak RSS growth while scoring {n + 5:,} records: {report['grew'] / 2**20:.1f} MiB")
    assert report["grew"] < 64 * 2**20
