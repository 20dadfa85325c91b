"""score-vcf: the progress bar's total (records counted by a raw pass) and sharded runs that merge in the
single pass over the input, with the ranks running at the same time."""

from __future__ import annotations

import contextlib
import gzip
import threading

import pysam
import pytest

import evo2lite.progress
from evo2lite.apps import score_vcf as S
from evo2lite.pipelines import vcf as V
from helpers import EXAMPLE_REF as REF, EXAMPLE_VCF as VCF, vcf_body

NUM_RECORDS = 76


def test_count_records_text_bgzf_bcf(tmp_path):
    text = gzip.open(VCF, "rb").read()
    plain, no_newline = tmp_path / "in.vcf", tmp_path / "last.vcf"
    plain.write_bytes(text)
    no_newline.write_bytes(text.rstrip(b"\n"))
    bcf = tmp_path / "in.bcf"
    with pysam.VariantFile(str(VCF)) as src, pysam.VariantFile(str(bcf), "wb", header=src.header) as out:
        for rec in src:
            out.write(rec)
    for path in (VCF, plain, no_newline):
        assert S._count_records(V.VcfInput(path)) == NUM_RECORDS
    assert S._count_records(V.VcfInput(bcf)) is None
    header_only = tmp_path / "empty.vcf"
    header_only.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    assert S._count_records(V.VcfInput(header_only)) == 0


@pytest.fixture
def bars(monkeypatch):
    """Every progress bar opened: [total, sum of its advances]."""
    opened = []

    @contextlib.contextmanager
    def fake(description, total, unit="items"):
        bar = [total, 0]
        opened.append(bar)
        yield lambda n=1: bar.__setitem__(1, bar[1] + n)

    monkeypatch.setattr(evo2lite.progress, "progress_bar", fake)
    monkeypatch.setattr(evo2lite.progress, "progress_shown", lambda: True)
    return opened


def test_progress_total_is_the_record_count(model, tmp_path, bars):
    S.score_variants(VCF, REF, model=model, window=64, threads=1, out=tmp_path / "o.vcf")
    S.score_variants(VCF, REF, model=model, window=64, threads=1, out=tmp_path / "r.vcf",
                     regions=["20:1-1,200,000"])
    assert bars[0] == [NUM_RECORDS, NUM_RECORDS]
    assert bars[1][0] is None  # a region's share is not known without reading it


def test_no_counting_pass_without_a_bar(model, tmp_path, bars, monkeypatch):
    monkeypatch.setattr(evo2lite.progress, "progress_shown", lambda: False)
    monkeypatch.setattr(S, "_count_records", lambda source: pytest.fail("counted without a bar"))
    S.score_variants(VCF, REF, model=model, window=64, threads=1, out=tmp_path / "q.vcf")
    assert bars == [[None, NUM_RECORDS]]


def test_ranks_at_once_merge_in_one_pass(model, tmp_path, bars, monkeypatch):
    kw = dict(model=model, window=64, batch_size=2, threads=1)
    S.score_variants(VCF, REF, out=tmp_path / "single.vcf.gz", **kw)
    opens = []
    real_open = V.VcfInput.open
    monkeypatch.setattr(V.VcfInput, "open", lambda self: opens.append(threading.get_ident()) or real_open(self))
    shard = tmp_path / "shard.vcf.gz"
    # rank 0 starts first and has to wait for rank 1's blocks as they come
    monkeypatch.setattr(S.PartFollower, "POLL_S", 0.01)
    errors = []

    def rank1():
        try:
            S.score_variants(VCF, REF, out=shard, rank=1, world_size=2, **kw)
        except Exception as exc:  # reported below
            errors.append(exc)

    worker = threading.Timer(0.5, rank1)
    worker.start()
    merged = S.score_variants(VCF, REF, out=shard, rank=0, world_size=2, keep_table=True, **kw)
    worker.join()
    assert not errors
    assert opens.count(threading.get_ident()) == 1  # rank 0 read the input once
    assert shard.read_bytes() == (tmp_path / "single.vcf.gz").read_bytes()
    assert len(vcf_body(shard)) == NUM_RECORDS and merged.num_records == NUM_RECORDS
    assert [NUM_RECORDS, NUM_RECORDS] in bars  # rank 0 counts every record it writes
    assert not (tmp_path / "shard.vcf.gz.evo2lite-ckpt").exists()


def test_part_follower_reads_appended_lines_and_rewritten_parts(tmp_path, monkeypatch):
    from evo2lite.apps.score_vcf_io import Checkpoint, PartFollower
    from evo2lite.errors import Evo2LiteError

    monkeypatch.setattr(PartFollower, "POLL_S", 0.01)
    path = Checkpoint.part(tmp_path, 1, 2)
    # a leftover of another run, finished: waited on, not read
    stale = Checkpoint(tmp_path, 1, 2)
    stale.start("other")
    stale.append(1, {0: ["x"]})
    stale.finish()
    follower = PartFollower(path, "ours")
    assert follower.results(1, wait=False) is None
    ck = Checkpoint(tmp_path, 1, 2)  # the rank starts: a new file
    ck.start("ours")
    ck.append(1, {0: [1.5, "ok"]})
    with open(path, "a") as fh:
        fh.write('{"block": 3, "resu')  # a line being written
    assert follower.results(1, wait=True) == {0: [1.5, "ok"]}
    assert follower.results(3, wait=False) is None
    # the same follower against a finished part of another run: an error once it has waited STALE_S
    monkeypatch.setattr(PartFollower, "STALE_S", 0.05)
    lost = PartFollower(Checkpoint.part(tmp_path, 1, 3), "ours")
    other = Checkpoint(tmp_path, 1, 3)
    other.start("other")
    other.finish()
    with pytest.raises(Evo2LiteError, match="another run"):
        lost.results(1, wait=True)
