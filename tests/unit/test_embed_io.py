"""evo2lite embed inputs and outputs: regions, BED, safe names, HDF5 / npz / Parquet writers, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest

from evo2lite.apps.embed import embed
from evo2lite.apps.embed_io import embed_file, output_format, plan_regions, read_inputs, safe_name
from evo2lite.checkpoint import load_model
from evo2lite.errors import Evo2LiteError, InputError

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "fixtures"
LAMBDA = "gi|9626243|ref|NC_001416.1|"


@pytest.fixture(scope="module")
def model():
    return load_model("debug", random_init=True, seed=1)


@pytest.fixture()
def fasta(tmp_path):
    path = tmp_path / "in.fa"
    path.write_text(">a/1 first record\nACGTACGTAC\nacgtnn\n>a/1 duplicate id\nGGGCCCAT\n>chr2:5-9\nTTTTAAAACCCCGGGG\n")
    return path


class _Reference:
    """The two things plan_regions needs of a ReferenceGenome."""

    contigs = {"chr1": 1000, "chr2:x": 50}

    def resolve(self, name):
        if name not in self.contigs:
            raise InputError(f"contig {name!r} is not in the reference")
        return name


def test_regions_are_planned_through_the_one_parser(tmp_path):
    """Strings are samtools syntax (1-based inclusive, thousands separators, chr:pos to the contig end);
    BED files come through -R; labels name what was asked (issue #9: one region parser)."""
    ref = _Reference()
    plan = plan_regions(ref, ["chr1:1-10", "chr1:901-1,000", "chr1:101", "chr1", "chr2:x:2-3", "chr1:1,000"])
    assert plan[0] == ("chr1", 0, 10, "chr1:1-10") and plan[1] == ("chr1", 900, 1000, "chr1:901-1000")
    assert plan[2] == ("chr1", 100, 1000, "chr1:101-1000") and plan[3] == ("chr1", 0, 1000, "chr1")
    assert plan[4][:3] == ("chr2:x", 1, 3) and plan[5][:3] == ("chr1", 999, 1000)
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\n# comment\nchr1\t0\t10\tgeneA\nchr1 5 9\n")
    assert plan_regions(ref, ["chr1:5-6"], [bed]) == [("chr1", 4, 6, "chr1:5-6"), ("chr1", 0, 10, "geneA"),
                                                      ("chr1", 5, 9, "chr1:6-9")]
    for bad, match in (("chr1:0-10", "1-based"), ("chr1:20-10", "before start"), ("chr1:990-1001", "outside"),
                       ("chrX:1-10", "not in"), ("chr1:1,0-5", "thousands")):
        with pytest.raises(InputError, match=match):
            plan_regions(ref, [bad])
    with pytest.raises(InputError, match="-R/--regions-file"):
        plan_regions(ref, [str(bed)])  # a BED file given where region strings go
    bed.write_text("chr1\tx\t10\n")
    with pytest.raises(InputError, match=r"r.bed:1: not a BED line"):
        plan_regions(ref, [], [bed])


def test_safe_names_and_formats():
    assert safe_name("gi|9626243|ref|NC_001416.1|") == "gi_9626243_ref_NC_001416.1_"
    assert safe_name("chr1:100-200") == "chr1_100-200"
    assert safe_name("..") == "_.." and safe_name("") == "_"
    assert [output_format(p) for p in ("x.h5", "x.HDF5", "x.npz", "x.parquet", "x.pq")] == \
        ["hdf5", "hdf5", "npz", "parquet", "parquet"]
    with pytest.raises(InputError, match="ending in"):
        output_format("x.csv")


def test_hdf5_per_token_streamed_into_the_file(tmp_path, fasta, model):
    out = tmp_path / "e.h5"
    summary = embed_file(fasta, out, model=model, layers=["blocks.1", "blocks.2.mlp"], chunk_size=5)
    assert summary["records"] == 3 and summary["bases"] == 16 + 8 + 16
    want = embed(model, "ACGTACGTACACGTNN", layers=["blocks.1", "blocks.2.mlp"])
    with h5py.File(out) as f:
        assert list(f) == ["a_1", "a_1__2", "chr2_5-9"]
        meta = json.loads(f.attrs["metadata"])
        assert meta["layers"] == ["blocks.1", "blocks.2.mlp"] and meta["mode"] == "exact"
        assert meta["config"]["name"] == "debug" and f.attrs["pool"] == "none"
        group = f["a_1"]
        assert (group.attrs["id"], group.attrs["start"], group.attrs["end"]) == ("a/1", 0, 16)
        assert group.attrs["description"] == "first record"
        for layer in ("blocks.1", "blocks.2.mlp"):
            ds = group[layer]
            assert ds.shape == (16, 64) and ds.compression == "gzip" and ds.chunks is not None
            np.testing.assert_allclose(ds[()], want[layer], atol=2e-5)
        assert f["chr2_5-9"].attrs["id"] == "chr2:5-9"


def test_npz_and_parquet(tmp_path, fasta, model):
    npz = tmp_path / "e.npz"
    embed_file(fasta, npz, model=model, layers="final", stride=4, rc_average=True)
    with np.load(npz) as z:
        meta = json.loads(str(z["__metadata__"]))
        assert sorted(z.files) == ["__metadata__", "a_1/final", "a_1__2/final", "chr2_5-9/final"]
        assert z["a_1/final"].shape == (4, 64) and z["a_1__2/final"].shape == (2, 64)
    assert meta["rc_average"] and meta["stride"] == 4
    assert [r["id"] for r in meta["records"]] == ["a/1", "a/1", "chr2:5-9"]

    table = tmp_path / "e.parquet"
    embed_file(fasta, table, model=model, layers=["blocks.0", "final"], pool="mean", batch_size=2)
    t = pq.read_table(table)
    assert t.column_names == ["id", "contig", "start", "end", "length", "blocks.0", "final"]
    assert t.column("id").to_pylist() == ["a/1", "a/1", "chr2:5-9"]
    vectors = np.array(t.column("final").to_pylist())
    np.testing.assert_allclose(vectors[1], embed(model, "GGGCCCAT", layers="final", pool="mean"), atol=2e-5)
    assert json.loads(t.schema.metadata[b"evo2lite"])["pool"] == "mean"

    windows = tmp_path / "w.parquet"
    embed_file(fasta, windows, model=model, layers="final", stride=10)
    t = pq.read_table(windows).to_pydict()
    assert t["window_start"] == [0, 10, 0, 0, 10] and t["window_end"] == [10, 16, 8, 10, 16]


def test_regions_of_a_reference(tmp_path, model):
    bed = tmp_path / "r.bed"
    bed.write_text(f"{LAMBDA}\t100\t160\tgeneX\n")
    out = tmp_path / "r.h5"
    ref = FIXTURES / "lambda.bgzf.fa.gz"
    embed_file(ref, out, model=model, regions_files=[bed], regions=[f"{LAMBDA}:1-50"], layers="final")
    from evo2lite.pipelines.fasta import ReferenceGenome

    with ReferenceGenome(ref) as genome:
        want = embed(model, genome.fetch(LAMBDA, 100, 160), layers="final")
    with h5py.File(out) as f:
        assert sorted(f) == ["geneX", "gi_9626243_ref_NC_001416.1__1-50"]
        assert (f["geneX"].attrs["contig"], f["geneX"].attrs["start"], f["geneX"].attrs["end"]) == (LAMBDA, 100, 160)
        np.testing.assert_allclose(f["geneX/final"][()], want, atol=2e-5)
        assert f["gi_9626243_ref_NC_001416.1__1-50/final"].shape == (50, 64)
    records, total = read_inputs(ref, [f"{LAMBDA}:48000-48502"])
    assert total == 503
    with pytest.raises(InputError, match="outside contig"):
        read_inputs(ref, [f"{LAMBDA}:48000-48503"])
    bed.write_text(f"{LAMBDA}\t48000\t48600\n")
    with pytest.raises(InputError, match="outside contig"):
        read_inputs(ref, regions_files=[bed])


def test_atomic_and_force(tmp_path, model):
    out = tmp_path / "e.h5"
    bad = tmp_path / "bad.fa"
    bad.write_text(">ok\nACGT\n>empty\n\n")
    with pytest.raises(InputError, match="'empty' is empty"):
        embed_file(bad, out, model=model)
    assert list(tmp_path.iterdir()) == [bad]  # nothing half-written is left
    good = tmp_path / "good.fa"
    good.write_text(">ok\nACGT\n")
    embed_file(good, out, model=model)
    with pytest.raises(Evo2LiteError, match="--force"):
        embed_file(good, out, model=model)
    embed_file(good, out, model=model, force=True, pool="max")
    with h5py.File(out) as f:
        assert f["ok/blocks.5"].shape == (64,)
    with pytest.raises(InputError, match="Parquet holds pooled vectors"):
        embed_file(good, tmp_path / "x.parquet", model=model)
