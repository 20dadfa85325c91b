"""Manifest -> shards on the real fixtures: packing, N runs, case mask, splits, checksums, chr17 guard."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from evo2lite.errors import Evo2LiteError, InputError
from evo2lite.pipelines import corpus
from evo2lite.pipelines.corpus import (
    ChecksumError,
    Chr17Error,
    ManifestError,
    build_corpus,
    chr17_name_reason,
    fingerprint_file,
    load_manifest,
    sequence_fingerprints,
    sha256_file,
)
from evo2lite.pipelines.fasta import read_sequences, write_fasta
from evo2lite.pipelines.windows import reverse_complement

FIX = Path(__file__).resolve().parents[2] / "data" / "fixtures"
CHR20 = "chr20_61188369_61288369"


def _fixture_manifest() -> dict:
    return yaml.safe_load((FIX / "manifest.yaml").read_text())


def _write_manifest(folder: Path, raw: dict) -> Path:
    """A manifest in ``folder`` whose relative paths still point at the fixtures."""
    raw = json.loads(json.dumps(raw))
    for s in raw["sources"]:
        if s.get("path") and not Path(s["path"]).is_absolute():
            s["path"] = str(FIX / s["path"])
    raw["deny_hashes_files"] = [str((FIX / f).resolve()) for f in raw.get("deny_hashes_files", [])]
    p = folder / "manifest.yaml"
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def _source(name, path, organism="Escherichia phage lambda", split="train", **kw):
    return {"name": name, "organism": organism, "licence": "test", "path": str(path),
            "sha256": sha256_file(path), "split": split, **kw}


def _split_index(out: Path, split: str) -> dict:
    return json.loads((out / split / "index.json").read_text())


def _record_bytes(out: Path, split: str, name: str) -> tuple[bytes, bytes]:
    idx = _split_index(out, split)
    (e,) = [e for e in idx["entries"] if e["name"] == name]
    tok = (out / split / "tokens.bin").read_bytes()
    msk = (out / split / "mask.bin").read_bytes()
    return tok[e["offset"] : e["offset"] + e["length"]], msk[e["offset"] : e["offset"] + e["length"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = build_corpus(FIX / "manifest.yaml", out, progress=False)
    return out, summary


def test_fixture_manifest_checksums_match_the_committed_files():
    m = load_manifest(FIX / "manifest.yaml")
    for s in m.sources:
        assert sha256_file(FIX / s.path) == s.sha256, s.name


def test_default_manifest_is_valid_and_has_no_chr17():
    m = load_manifest(FIX.parent / "corpus" / "default.yaml")
    assert len(m.sources) >= 40
    assert all(s.debian and s.sha256 and s.licence and s.organism for s in m.sources)
    assert {s.split for s in m.sources} >= {"train", "val", "test"}
    for s in m.sources:
        assert chr17_name_reason(s.name) is None
        assert "17" not in Path(s.debian["file"]).name


def test_layout_eos_and_offsets(built):
    out, summary = built
    assert set(summary["splits"]) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        idx = _split_index(out, split)
        tok = np.fromfile(out / split / "tokens.bin", dtype=np.uint8)
        msk = np.fromfile(out / split / "mask.bin", dtype=np.uint8)
        assert tok.size == msk.size == idx["num_tokens"]
        ends = [e["offset"] + e["length"] for e in idx["entries"]]
        assert tok[ends].tolist() == [0] * len(ends)  # every record is followed by EOS
        assert int((tok == 0).sum()) == len(ends)  # and EOS appears nowhere else
        assert msk[ends].tolist() == [0] * len(ends)
        assert set(np.unique(tok[tok != 0]).tolist()) <= set(b"ACGTNRYKMSWBDHV")  # upper case only
        offsets = [e["offset"] for e in idx["entries"]]
        assert offsets == sorted(offsets) and offsets[0] == 0


def test_lambda_packed_verbatim(built):
    out, _ = built
    tok, msk = _record_bytes(out, "train", "gi|9626243|ref|NC_001416.1|")
    (rec,) = read_sequences(FIX / "lambda.fa")
    assert tok == rec.seq and set(msk) == {0}


def test_long_n_run_is_cut_out_and_the_pieces_kept(built):
    out, summary = built
    # the chr20 slice is 25 kb sequence, 50 kb N, 25 kb sequence; the first piece is held out (val)
    (ref,) = read_sequences(FIX / f"{CHR20}.fa")
    val_tok, _ = _record_bytes(out, "val", f"{CHR20}:0-25000")
    train_tok, _ = _record_bytes(out, "train", f"{CHR20}:75000-100000")
    assert val_tok == ref.seq[:25000] and train_tok == ref.seq[75000:]
    assert b"N" not in val_tok + train_tok
    src = {s["name"]: s for s in summary["sources"]}["human_chr20_slice"]
    assert src["n_bases_dropped"] == 50000 and src["bases"] == 50000


def test_short_n_runs_stay_and_threshold_is_inclusive(tmp_path):
    fa = tmp_path / "n.fa"
    seq = "ACGT" * 20 + "N" * 99 + "ACGT" * 20 + "N" * 100 + "TTGCA" * 20 + "n" * 150
    write_fasta([("r1", seq)], fa)
    raw = {"version": 1, "n_run_min": 100, "min_segment_len": 10, "sources": [_source("s", fa, organism="test")]}
    out = tmp_path / "out"
    build_corpus(_write_manifest(tmp_path, raw), out, progress=False)
    names = [e["name"] for e in _split_index(out, "train")["entries"]]
    assert names == ["r1:0-259", "r1:359-459"]
    tok, _ = _record_bytes(out, "train", "r1:0-259")
    assert tok.count(b"N") == 99


def test_case_becomes_mask_and_tokens_are_upper(built):
    out, _ = built
    recs = {r.name: r.seq for r in read_sequences(FIX / "dicty_cdna20.fa")}
    seen = 0
    for split in ("train", "val", "test"):
        for e in _split_index(out, split)["entries"]:
            if e["source"] != "dicty_cdna":
                continue
            tok, msk = _record_bytes(out, split, e["name"])
            src = recs[e["record"]]
            assert tok == src.upper()
            assert bytes(msk) == bytes(int(chr(c).islower()) for c in src)
            seen += 1
    assert seen == 20
    assert sum(1 for s in recs.values() if any(chr(c).islower() for c in s)) >= 10


def test_soft_masked_false_ignores_case(tmp_path):
    fa = tmp_path / "low.fa"
    write_fasta([("r", "acgtacgtac" * 10)], fa)
    raw = {"version": 1, "sources": [_source("s", fa, organism="test", soft_masked=False)]}
    out = tmp_path / "out"
    build_corpus(_write_manifest(tmp_path, raw), out, progress=False)
    tok, msk = _record_bytes(out, "train", "r")
    assert tok == b"ACGTACGTAC" * 10 and set(msk) == {0}


def test_splits_are_deterministic(built, tmp_path):
    out, summary = built
    out2 = tmp_path / "again"
    assert build_corpus(FIX / "manifest.yaml", out2, progress=False) == summary
    for split in ("train", "val", "test"):
        for f in ("tokens.bin", "mask.bin", "index.json"):
            assert (out / split / f).read_bytes() == (out2 / split / f).read_bytes()
    # `split: auto` depends on (seed, source, record) only: reordering sources changes nothing
    raw = _fixture_manifest()
    raw["sources"] = raw["sources"][::-1]
    out3 = tmp_path / "reordered"
    build_corpus(_write_manifest(tmp_path, raw), out3, progress=False)

    def assignment(o):
        return {(e["source"], e["name"]): s for s in ("train", "val", "test") for e in _split_index(o, s)["entries"]}

    assert assignment(out3) == assignment(out)
    dicty = {n: s for (src, n), s in assignment(out).items() if src == "dicty_cdna"}
    assert set(dicty.values()) == {"train", "val", "test"}  # 20 records, 20%/20% held out
    # a different seed moves records between splits
    raw["split_seed"] = 1
    out4 = tmp_path / "seed1"
    build_corpus(_write_manifest(tmp_path, raw), out4, progress=False)
    assert assignment(out4) != assignment(out)


def test_split_by_contig_and_whole_source(built):
    out, _ = built
    test_sources = {e["source"] for e in _split_index(out, "test")["entries"]}
    assert "aywb_plasmids" in test_sources  # split: test on the source
    names = [e["name"] for e in _split_index(out, "test")["entries"] if e["source"] == "aywb_plasmids"]
    assert names == ["NC_007719.1", "NC_007717.1", "NC_007718.1", "NC_007720.1"]
    train_names = {e["name"] for e in _split_index(out, "train")["entries"]}
    assert not train_names & set(names)


def test_region_spec_parsing():
    assert corpus.parse_region("20:0-1,000,000") == ("20", 0, 1000000)
    assert corpus.parse_region("20:1-1,000,000", "1-based") == ("20", 0, 1000000)  # the same first megabase
    assert corpus.parse_region("chr20") == ("chr20", 0, None)
    assert corpus.parse_region("Umaydis:chr01:1:+:2476500") == ("Umaydis:chr01:1:+:2476500", 0, None)
    assert corpus.parse_region("Umaydis:chr01:1:+:2476500:10-20") == ("Umaydis:chr01:1:+:2476500", 10, 20)
    with pytest.raises(InputError):
        corpus.parse_region("20:0-10", "1-based")  # 1-based has no position 0
    with pytest.raises(InputError):
        corpus.parse_region("20:10-10")  # 0-based half-open: empty


def test_manifest_states_its_coordinates(tmp_path):
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "data/corpus/default.yaml").read_text())
    assert shipped["coordinates"] == "0-based"
    fa = tmp_path / "a.fa"
    fa.write_text(">x\nACGT\n")
    base = {"version": 1, "sources": [{"name": "a", "organism": "o", "licence": "l", "path": "a.fa",
                                       "sha256": corpus.sha256_file(fa)}]}
    for coordinates, region, expected in (("0-based", "x:0-10", (0, 10)), ("1-based", "x:1-10", (0, 10))):
        path = tmp_path / f"{coordinates}.yaml"
        path.write_text(yaml.safe_dump({**base, "coordinates": coordinates,
                                        "splits": [{"region": region, "split": "val"}]}))
        r = load_manifest(path).splits[0]
        assert (r.contig, r.start, r.end) == ("x", *expected)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**base, "coordinates": "2-based"}))
    with pytest.raises(ManifestError, match="coordinates must be"):
        load_manifest(path)


def test_checksum_mismatch_is_one_clear_line(tmp_path):
    raw = _fixture_manifest()
    raw["sources"][1]["sha256"] = "0" * 64
    with pytest.raises(ChecksumError) as err:
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False)
    msg = str(err.value)
    assert issubclass(err.type, Evo2LiteError) and "\n" not in msg
    assert "'human_chr20_slice'" in msg and "0" * 64 in msg and sha256_file(FIX / f"{CHR20}.fa") in msg
    assert not (tmp_path / "out" / "corpus.json").exists()  # nothing half-built is left as a corpus
    assert not (tmp_path / "out" / ".partial").exists()


def test_missing_checksum_names_the_value_to_add(tmp_path):
    raw = _fixture_manifest()
    del raw["sources"][0]["sha256"]
    with pytest.raises(ChecksumError, match=sha256_file(FIX / "lambda.fa.gz")):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"split": "holdout"}, "split must be"),
        ({"organism": ""}, "`organism` is required"),
        ({"path": None}, "exactly one of"),
        ({"sha256": "xyz"}, "64 hex"),
        ({"colour": "red"}, "unknown keys"),
    ],
)
def test_manifest_errors(tmp_path, change, match):
    raw = _fixture_manifest()
    raw["sources"][0].update(change)
    raw["sources"][0] = {k: v for k, v in raw["sources"][0].items() if v is not None}
    with pytest.raises(ManifestError, match=match):
        load_manifest(_write_manifest(tmp_path, raw))


def test_overlapping_regions_and_existing_output_refused(tmp_path, built):
    raw = _fixture_manifest()
    raw["splits"].append({"region": f"{CHR20}:20000-30000", "split": "test"})
    with pytest.raises(ManifestError, match="overlap"):
        load_manifest(_write_manifest(tmp_path, raw))
    with pytest.raises(Evo2LiteError, match="already holds a corpus"):
        build_corpus(FIX / "manifest.yaml", built[0], progress=False)


def test_protein_fasta_is_refused(tmp_path):
    fa = tmp_path / "prot.fa"
    fa.write_text(">p\nMKVLAAGIVGLLLAQPAMA\n")
    raw = {"version": 1, "sources": [_source("p", fa, organism="test")]}
    with pytest.raises(InputError, match="not an IUPAC nucleotide"):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False)


# ---- the chromosome-17 guard -------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, desc",
    [
        ("chr17", ""),
        ("17", ""),
        ("CHR17", ""),
        ("NC_000017.11", ""),
        ("NC_000017.10", ""),
        ("NC_000017", ""),
        ("CM000679.2", ""),
        ("NC_060941.1", ""),
        ("CP068261.2", ""),
        ("chr17_KI270729v1_random", ""),
        ("chr17_ctg5_hap1", ""),
        ("HSCHR17_1_CTG1", ""),
        ("gi|568815581|ref|NC_000017.11|", ""),
        ("NW_003315950.2", "Homo sapiens chromosome 17 genomic scaffold, GRCh38.p14 alternate locus group"),
        ("seqA", "dna:chromosome chromosome:GRCh38:17:1:83257441:1 REF"),
    ],
)
def test_chr17_names_are_recognised(name, desc):
    assert chr17_name_reason(name, desc) is not None


@pytest.mark.parametrize(
    "name, desc",
    [
        ("20", ""),
        ("chr7", ""),
        ("chr170", ""),
        ("NC_000020.10", ""),
        ("NC_000017x", ""),
        ("MAL17", ""),
        ("gi|9626243|ref|NC_001416.1|", "Enterobacteria phage lambda, complete genome"),
        ("NC_000083.7", "Mus musculus strain C57BL/6J chromosome 17, GRCm39"),
        ("X", "gi|224589822|ref|NC_000023.10|"),
    ],
)
def test_other_names_pass(name, desc):
    assert chr17_name_reason(name, desc) is None


def test_chr17_by_name_fails_the_build(tmp_path):
    fa = tmp_path / "renamed.fa"
    (lam,) = read_sequences(FIX / "lambda.fa")
    write_fasta([("chr17", lam.seq[:5000])], fa)
    raw = {"version": 1, "sources": [_source("human_extra", fa, organism="Homo sapiens")]}
    m = _write_manifest(tmp_path, raw)
    with pytest.raises(Chr17Error, match="'human_extra'.*chromosome 17"):
        build_corpus(m, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "train").exists()
    # policy `skip`: the record is dropped and reported, never packed
    raw["chr17"] = "skip"
    raw["sources"].append(_source("lambda", FIX / "lambda.fa"))
    summary = build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out2", progress=False)
    assert [x["record"] for x in summary["chr17_guard"]["excluded"]] == ["chr17"]
    assert [e["record"] for e in _split_index(tmp_path / "out2", "train")["entries"]] == [lam.name]


def test_bare_17_allowed_only_for_declared_non_human(tmp_path):
    fa = tmp_path / "mouse.fa"
    write_fasta([("17", "ACGT" * 100)], fa)
    raw = {"version": 1, "sources": [_source("mouse", fa, organism="Mus musculus", allow_chr17_name=True)]}
    out = tmp_path / "out"
    build_corpus(_write_manifest(tmp_path, raw), out, progress=False)
    assert [e["record"] for e in _split_index(out, "train")["entries"]] == ["17"]
    raw["sources"][0]["organism"] = "Homo sapiens"
    with pytest.raises(ManifestError, match="refused for a human"):
        load_manifest(_write_manifest(tmp_path, raw))
    raw["sources"][0] = _source("mouse", fa, organism="Mus musculus")  # not declared: refused
    with pytest.raises(Chr17Error):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out2", progress=False)


def test_fingerprints_ignore_offset_case_and_strand():
    (ref,) = read_sequences(FIX / f"{CHR20}.fa")
    seq = ref.seq[75000:]  # 25 kb of real human sequence, no N
    fp = sequence_fingerprints(seq)
    assert 4 <= len(fp) <= 25
    shifted = b"ACGT" * 777 + seq[1234:].lower() + b"TTGA" * 100
    assert len(fp & sequence_fingerprints(shifted)) >= len(fp) - 2  # all but the chunks cut by the ends
    assert sequence_fingerprints(reverse_complement(seq)) == fp  # strand-independent
    assert not fp & sequence_fingerprints(ref.seq[:25000])  # the other side of the gap shares nothing


def test_fingerprints_catch_pieces_longer_than_a_few_chunks():
    # Any 8 kb piece of real sequence, wherever it is cut, keeps at least one whole chunk.
    (ref,) = read_sequences(FIX / f"{CHR20}.fa")
    (lam,) = read_sequences(FIX / "lambda.fa")
    for seq in (ref.seq[75000:], lam.seq):
        fp = sequence_fingerprints(seq)
        for start in range(0, len(seq) - 8000, 1500):
            assert fp & sequence_fingerprints(seq[start : start + 8000]), start


def test_fingerprints_skip_low_complexity():
    assert sequence_fingerprints(b"TTAGGG" * 5000) == set()
    assert sequence_fingerprints(b"ACGTN" * 5000) == set()


def test_chr17_by_hash_catches_renamed_sequence(tmp_path):
    # Stand-in for chr17: the deny-list is made from the right arm of the chr20 slice, exactly as one
    # would run fingerprint_file on chr17.fa. A source that hides 10 kb of it, renamed, reverse
    # complemented, lower-cased and rewrapped inside other sequence must be refused.
    (ref,) = read_sequences(FIX / f"{CHR20}.fa")
    secret = tmp_path / "secret.fa"
    write_fasta([("secret", ref.seq[75000:])], secret)
    deny = tmp_path / "deny.sha256"
    digests = fingerprint_file(secret, out=deny)
    assert digests and deny.read_text().startswith("#")
    assert set(fingerprint_file(secret, shared_with=[FIX / f"{CHR20}.fa"])) == set()  # all shared
    (lam,) = read_sequences(FIX / "lambda.fa")
    hidden = lam.seq[:20000] + reverse_complement(ref.seq[81000:91000]).lower() + lam.seq[20000:]
    sneaky = tmp_path / "sneaky.fa"
    write_fasta([("seq1", hidden)], sneaky, line_width=77)
    raw = {"version": 1, "deny_hashes_files": [str(deny)],
           "sources": [_source("innocent", FIX / "lambda.fa"), _source("sneaky", sneaky, organism="unknown")]}
    with pytest.raises(Chr17Error, match="'sneaky'.*'seq1'.*fingerprint"):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False)
    # the chr20 slice itself is the denied sequence: caught under its own name too
    raw["sources"] = [_source("chr20", FIX / f"{CHR20}.fa", organism="Homo sapiens")]
    with pytest.raises(Chr17Error, match="'chr20'"):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out2", progress=False)
    # unrelated real sequence passes the same deny-list: no false positive
    raw["sources"] = [_source("lambda", FIX / "lambda.fa"), _source("dicty", FIX / "dicty_cdna20.fa", organism="x")]
    build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out3", progress=False)


def test_inline_deny_hashes(tmp_path):
    (lam,) = read_sequences(FIX / "lambda.fa")
    raw = {"version": 1, "deny_hashes": sorted(sequence_fingerprints(lam.seq))[:1],
           "sources": [_source("lambda", FIX / "lambda.fa.gz")]}
    with pytest.raises(Chr17Error):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False)


# ---- Debian sources (local .deb; no network) ---------------------------------------------------


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_source_from_cached_deb(tmp_path):
    pkg = tmp_path / "pkgroot"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: evo2lite-test-lambda\nVersion: 1:0.1-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    inner = pkg / "usr" / "share" / "doc" / "x"
    inner.mkdir(parents=True)
    shutil.copy(FIX / "lambda.fa.gz", inner / "lambda.fa.gz")
    cache = tmp_path / "cache"
    cache.mkdir()
    deb = cache / "evo2lite-test-lambda_1%3a0.1-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    raw = {"version": 1, "sources": [{
        "name": "lambda", "organism": "Escherichia phage lambda", "licence": "test",
        "debian": {"package": "evo2lite-test-lambda", "version": "1:0.1-1", "file": "usr/share/doc/x/lambda.fa.gz"},
        "sha256": sha256_file(FIX / "lambda.fa.gz")}]}
    summary = build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out", progress=False, cache_dir=cache)
    assert summary["sources"][0]["bases"] == 48502
    raw["sources"][0]["debian"]["file"] = "usr/share/doc/x/missing.fa"
    with pytest.raises(InputError, match="not in Debian package"):
        build_corpus(_write_manifest(tmp_path, raw), tmp_path / "out2", progress=False, cache_dir=cache)


def test_region_overrides_by_whole_contig_and_by_interval(tmp_path):
    raw = _fixture_manifest()
    raw["splits"] = [
        {"region": "NC_007717.1", "split": "val"},  # a whole contig of a `split: test` source
        {"contig": "gi|9626243|ref|NC_001416.1|", "start": 40000, "split": "test", "source": "phage_lambda"},
    ]
    out = tmp_path / "out"
    build_corpus(_write_manifest(tmp_path, raw), out, progress=False)
    where = {e["name"]: s for s in ("train", "val", "test") for e in _split_index(out, s)["entries"]}
    assert where["NC_007717.1"] == "val" and where["NC_007719.1"] == "test"
    lam = "gi|9626243|ref|NC_001416.1|"
    assert where[f"{lam}:0-40000"] == "train" and where[f"{lam}:40000-48502"] == "test"
    (rec,) = read_sequences(FIX / "lambda.fa")
    assert _record_bytes(out, "test", f"{lam}:40000-48502")[0] == rec.seq[40000:]
