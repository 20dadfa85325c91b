"""Readers on the real fixtures in data/fixtures: every format gives the same bases."""

import bz2
import lzma
import shutil
from pathlib import Path

import pytest

from evo2lite.errors import Evo2LiteError, InputError
from evo2lite.pipelines import fasta
from evo2lite.pipelines.fasta import ReferenceGenome, detect_compression, read_sequences

FIX = Path(__file__).resolve().parents[2] / "data" / "fixtures"
LAMBDA_NAME = "gi|9626243|ref|NC_001416.1|"
CHR20 = "chr20_61188369_61288369"


def _lambda_plain() -> bytes:
    lines = (FIX / "lambda.fa").read_bytes().splitlines()
    return b"".join(lines[1:])


def test_compression_is_detected_by_magic_bytes(tmp_path):
    assert detect_compression(FIX / "lambda.fa") == "plain"
    assert detect_compression(FIX / "lambda.fa.gz") == "gzip"
    assert detect_compression(FIX / "lambda.bgzf.fa.gz") == "bgzf"
    disguised = tmp_path / "lambda.txt"  # the name says nothing; the bytes do
    shutil.copy(FIX / "lambda.bgzf.fa.gz", disguised)
    assert detect_compression(disguised) == "bgzf"


@pytest.mark.parametrize("name", ["lambda.fa", "lambda.fa.gz", "lambda.bgzf.fa.gz"])
def test_lambda_same_record_in_every_compression(name):
    recs = list(read_sequences(FIX / name))
    assert len(recs) == 1
    rec = recs[0]
    assert rec.name == LAMBDA_NAME
    assert rec.description == "Enterobacteria phage lambda, complete genome"
    assert len(rec.seq) == 48502
    assert rec.seq == _lambda_plain()
    assert rec.seq[:20] == b"GGGCGGCGACCTCGCGGGTT"


def test_xz_and_bz2_and_odd_line_widths(tmp_path):
    seq = _lambda_plain()
    text = b">lam one\n" + b"\n".join(seq[i : i + 33] for i in range(0, len(seq), 33)) + b"\r\n\n"
    (tmp_path / "a.fa.xz").write_bytes(lzma.compress(text))
    (tmp_path / "a.fa.bz2").write_bytes(bz2.compress(text))
    for p in ("a.fa.xz", "a.fa.bz2"):
        (rec,) = read_sequences(tmp_path / p)
        assert rec.name == "lam" and rec.description == "one" and rec.seq == seq


def test_multi_record_fasta_keeps_case_and_order():
    recs = list(read_sequences(FIX / "dicty_cdna20.fa"))
    assert len(recs) == 20
    assert recs[0].name == "gnl|UG|Ddi#S14458454"
    assert len(recs[0].seq) == 1282
    assert recs[0].seq.startswith(b"AAACaaaaaaaa")  # soft-masked (lower-case) bases survive
    assert all(r.seq for r in recs)


def test_genbank_plain_gzip_and_multi_record():
    (rec,) = read_sequences(FIX / "NC_009934.gbk")
    assert rec.name == "NC_009934.1" and len(rec.seq) == 2133
    assert "Acaryochloris marina" in rec.description
    (vec,) = read_sequences(FIX / "X52329.gbk.gz")
    assert vec.name == "X52329.1" and len(vec.seq) == 2961
    recs = list(read_sequences(FIX / "aywb_plasmids.gbk"))
    assert [r.name for r in recs] == ["NC_007719.1", "NC_007717.1", "NC_007718.1", "NC_007720.1"]
    assert [len(r.seq) for r in recs] == [5104, 3972, 4009, 4316]
    assert all(set(r.seq) <= set(b"ACGTN") for r in recs)


def test_reader_is_streaming():
    it = read_sequences(FIX / "dicty_cdna20.fa")
    first = next(it)  # a generator: nothing beyond the first record needs to be read yet
    assert first.name == "gnl|UG|Ddi#S14458454"


def test_not_a_sequence_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    with pytest.raises(InputError, match="not a FASTA or GenBank"):
        list(read_sequences(bad))
    with pytest.raises(InputError, match="no such file"):
        list(read_sequences(tmp_path / "missing.fa"))
    trunc = tmp_path / "trunc.fa.gz"
    trunc.write_bytes((FIX / "lambda.fa.gz").read_bytes()[:4000])
    with pytest.raises(InputError, match="truncated"):
        list(read_sequences(trunc))


def test_write_fasta_round_trip(tmp_path):
    recs = list(read_sequences(FIX / "dicty_cdna20.fa"))[:3]
    fasta.write_fasta(recs, tmp_path / "out.fa", line_width=50)
    assert list(read_sequences(tmp_path / "out.fa")) == recs


# ---- ReferenceGenome ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lambda.fa", "lambda.bgzf.fa.gz"])
def test_reference_fetch_plain_and_bgzf(tmp_path, name):
    shutil.copy(FIX / name, tmp_path / name)  # index files are written beside the copy, not in data/
    seq = _lambda_plain().decode()
    with ReferenceGenome(tmp_path / name) as ref:
        assert ref.contigs == {LAMBDA_NAME: 48502}
        assert ref.fetch(LAMBDA_NAME, 0, 10) == seq[:10]
        assert ref.fetch(LAMBDA_NAME, 30000, 30123) == seq[30000:30123]
        assert ref.fetch(LAMBDA_NAME, 48500, 48502) == seq[-2:]
        assert ref.fetch(LAMBDA_NAME, 5, 5) == ""


def test_reference_keeps_case_and_checks_bounds(tmp_path):
    shutil.copy(FIX / "dicty_cdna20.fa", tmp_path / "d.fa")
    with ReferenceGenome(tmp_path / "d.fa") as ref:
        assert ref.fetch("gnl|UG|Ddi#S14458454", 0, 12) == "AAACaaaaaaaa"
        with pytest.raises(InputError, match="outside the contig"):
            ref.fetch("gnl|UG|Ddi#S14458454", 1200, 1300)
        with pytest.raises(InputError, match="outside the contig"):
            ref.fetch("gnl|UG|Ddi#S14458454", -1, 3)
        with pytest.raises(InputError, match="not in"):
            ref.fetch("nope", 0, 1)


def test_reference_read_only_folder_indexes_in_temp(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    shutil.copy(FIX / "chr20_61188369_61288369.fa", folder / "c.fa")
    # Root ignores chmod, so stand in for a read-only mount at the one place the code asks.
    monkeypatch.setattr(fasta, "_can_write", lambda d: False)
    ref = ReferenceGenome(folder / "c.fa")
    assert sorted(p.name for p in folder.iterdir()) == ["c.fa"]  # nothing written beside it
    assert ref.contigs == {CHR20: 100000}
    assert ref.fetch(CHR20, 24990, 25010) == ref.fetch(CHR20, 24990, 25000) + "N" * 10
    tmp = Path(ref._tmpdir.name)
    assert tmp.is_dir()
    ref.close()
    assert not tmp.exists()


def test_reference_plain_gzip_says_how_to_fix(tmp_path):
    shutil.copy(FIX / "lambda.fa.gz", tmp_path / "lambda.fa.gz")
    with pytest.raises(InputError, match="bgzip") as err:
        ReferenceGenome(tmp_path / "lambda.fa.gz")
    assert issubclass(err.type, Evo2LiteError)
    fixed = fasta.to_bgzf(tmp_path / "lambda.fa.gz", tmp_path / "lambda.bgz")
    assert detect_compression(fixed) == "bgzf"
    with ReferenceGenome(fixed) as ref:
        assert ref.fetch(LAMBDA_NAME, 100, 200) == _lambda_plain()[100:200].decode()


def test_reference_resolves_chr_prefix(tmp_path):
    p = tmp_path / "r.fa"
    fasta.write_fasta([("20", "ACGTACGTAC"), ("chrX", "ggggcccc"), ("MT", "AAAA")], p)
    with ReferenceGenome(p) as ref:
        assert ref.resolve("chr20") == "20"
        assert ref.resolve("X") == "chrX"
        assert ref.resolve("chrM") == "MT"
        assert ref.fetch("chrX", 2, 6) == "ggcc"
        with pytest.raises(InputError, match="named '20' there"):
            ref.fetch("chr20", 0, 2)
        with pytest.raises(InputError, match="is not in"):
            ref.resolve("chr7")


def test_reference_refuses_an_ambiguous_alias(tmp_path):
    p = tmp_path / "r.fa"
    fasta.write_fasta([("M", "ACGT"), ("MT", "AAAA"), ("chr1", "CCCC")], p)
    with ReferenceGenome(p) as ref:
        assert ref.resolve("1") == "chr1"
        assert ref.resolve("MT") == "MT"  # an exact name is never an alias
        with pytest.raises(InputError, match="ambiguous"):
            ref.resolve("chrM")
