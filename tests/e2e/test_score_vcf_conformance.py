"""score-vcf on the hts-specs VCF conformance corpus ($EVO2LITE_SHARED/data/vcf-conformance, default
<repo>/../shared), in-process. Skipped when the corpus is absent, except under CI (CI=true): there a
missing corpus fails, so the test cannot vanish silently.

Every passed/ file is processed with every record accounted for; every failed/ file is either rejected
with a one-line Evo2LiteError (and no output left behind) or processed with every record accounted for.
Never another exception, never a lost record. The reference is synthetic: one random contig per
contig name in the corpus, with each record's REF written in at its position (first one wins), so
most records are really scored (tiny random model, 64-base windows).
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest

from evo2lite.apps.score_vcf import TABLE_COLUMNS, score_variants
from evo2lite.errors import Evo2LiteError
from evo2lite.pipelines.vcf import STATUS_DESCRIPTIONS, STATUS_OK, to_zero_based

SHARED = Path(os.environ.get("EVO2LITE_SHARED") or Path(__file__).resolve().parents[3] / "shared")
CORPUS = SHARED / "data" / "vcf-conformance"
FILES = sorted(CORPUS.glob("*/passed/*.vcf")) + sorted(CORPUS.glob("*/failed/*.vcf")) + sorted(CORPUS.glob("*.vcf"))


def test_corpus_is_present_under_ci():
    if not FILES and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the VCF conformance corpus is not at {CORPUS}: set EVO2LITE_SHARED to the folder holding "
                    "data/vcf-conformance")
    if not FILES:
        pytest.skip(f"conformance corpus not found at {CORPUS} (set EVO2LITE_SHARED)")


needs_corpus = pytest.mark.skipif(not FILES, reason=f"conformance corpus not found at {CORPUS}")

_NAME = re.compile(r"^[A-Za-z0-9_.]+$")


def body_lines(path: Path) -> list[list[str]]:
    """Data lines of a VCF as text (independent of htslib): non-empty lines not starting with '#'."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    return [line.split("\t") for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    rng = random.Random(0)
    contigs: dict[str, bytearray] = {}
    refs = []
    for path in FILES:
        for cols in body_lines(path):
            if len(cols) < 4 or not _NAME.match(cols[0]) or not cols[1].isdigit():
                continue
            refs.append((cols[0], to_zero_based(int(cols[1])), cols[3]))
    length = {}
    for chrom, start, ref in refs:
        length[chrom] = max(length.get(chrom, 0), start + len(ref) + 200)
    for chrom, n in length.items():
        contigs[chrom] = bytearray(rng.choice(b"ACGT") for _ in range(n))
    written = set()
    for chrom, start, ref in refs:
        if start < 0 or not re.fullmatch(r"[ACGTNacgtn]+", ref) or (chrom, start) in written:
            continue
        written.add((chrom, start))
        contigs[chrom][start: start + len(ref)] = ref.encode()
    path = tmp_path_factory.mktemp("ref") / "conformance.fa"
    with open(path, "wb") as out:
        for chrom, seq in contigs.items():
            out.write(b">" + chrom.encode() + b"\n")
            for i in range(0, len(seq), 60):
                out.write(bytes(seq[i: i + 60]) + b"\n")
    return path


# model (preset "debug", seed 0): tests/conftest.py
def run(path, reference, model, out_dir):
    out, table = out_dir / "out.vcf", out_dir / "out.tsv"
    # One thread: tiny matmuls only lose to threading overhead (and CI's 2 cores are shared).
    result = score_variants(path, reference, model=model, window=64, batch_size=32, out=out, table=table,
                            force=True, progress=False, threads=1, keep_table=True)
    return result, out, table


def check_all_accounted_for(path: Path, result, out: Path):
    records = body_lines(path)
    out_records = body_lines(out)
    assert len(out_records) == len(records) == result.num_records, path.name
    for cols_in, cols_out in zip(records, out_records):
        assert cols_out[1] == cols_in[1], (path.name, cols_in[:5])  # same POS, same order
    table = result.table
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == sum(max(1, len(r.alts or ())) for r in _pysam_records(path))
    assert set(table["status"]) <= set(STATUS_DESCRIPTIONS)
    assert table.loc[table["status"] == STATUS_OK, "score"].notna().all()
    assert table.loc[table["status"] != STATUS_OK, "score"].isna().all()


def _pysam_records(path):
    import pysam

    pysam.set_verbosity(0)
    with pysam.VariantFile(str(path)) as vf:
        return list(vf)


@needs_corpus
def test_conformance_corpus(reference, model, tmp_path):
    outcomes = {"passed": 0, "failed-rejected": 0, "failed-processed": 0}
    scored = 0
    for path in FILES:
        out_dir = tmp_path / path.parent.parent.name / path.parent.name / path.stem
        out_dir.mkdir(parents=True)
        expect_ok = path.parent.name != "failed"
        try:
            result, out, table = run(path, reference, model, out_dir)
        except Evo2LiteError as exc:
            message = str(exc)
            assert not expect_ok, f"{path}: a passed/ file was rejected: {message}"
            assert "\n" not in message and message, path
            assert str(path) in message or path.name in message, message
            assert not any(p.name != ".." for p in out_dir.iterdir()), f"{path}: output left behind"
            outcomes["failed-rejected"] += 1
            continue
        check_all_accounted_for(path, result, out)
        scored += int((result.table["status"] == STATUS_OK).sum())
        outcomes["passed" if expect_ok else "failed-processed"] += 1
    assert outcomes["passed"] == sum(1 for p in FILES if p.parent.name != "failed")
    assert scored > 500  # the synthetic reference makes most corpus records scorable
    print(outcomes, "scored ALTs:", scored)
