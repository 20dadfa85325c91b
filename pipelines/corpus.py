"""Corpus manifest -> verified sources -> packed byte shards, with the chromosome-17 guard.

Manifest (YAML; paths are relative to the manifest's folder)::

    version: 1
    name: my-corpus
    n_run_min: 100            # runs of N at least this long are cut out; the pieces become records
    min_segment_len: 32       # pieces shorter than this are dropped
    split_seed: 0             # for `split: auto`
    split_fractions: {val: 0.05, test: 0.05}
    chr17: error              # or `skip`: what a chromosome-17 hit does (it never enters the corpus)
    deny_hashes_files: [chr17_deny.sha256]   # sequence fingerprints that must not enter (see below)
    deny_hashes: []           # ... or inline
    deny_min_hits: 1          # a record sharing this many fingerprints with the deny-list is chr17
    sources:
      - name: phage_lambda                      # unique, [A-Za-z0-9_.-]
        organism: Escherichia phage lambda
        licence: GPL-3.0+ (Debian package bowtie2-examples)
        path: fixtures/lambda.fa                 # a local file, or:
        # debian: {package: bowtie2-examples, version: 2.5.0-3, file: usr/share/doc/.../lambda_virus.fa.gz}
        sha256: 7e0b...                         # of the file as obtained (required)
        format: auto                            # fasta | genbank | auto
        split: train                            # train | val | test | auto (per record, hashed)
        include: [...]  exclude: [...]          # optional record-name filters
        allow_chr17_name: false                 # only for non-human organisms that have a "chr17"
        soft_masked: true                       # false: lower case carries no meaning here, mask = 0
    splits:                                     # region overrides, 0-based half-open
      - {region: "20:0-10000000", split: val}
      - {contig: "some:name:with:colons", start: 0, end: 5000, split: test, source: x}

Output of :func:`build_corpus` (``out_dir``)::

    corpus.json                  what was built: sources, checksums, per-split totals, exclusions
    train/ val/ test/            one folder per non-empty split, each with
        tokens.bin               uint8 bytes, upper-cased; each record followed by EOS (byte 0)
        mask.bin                 uint8, 1 where the source base was lower case (soft-masked), else 0
        index.json               entries: name, source, organism, record, start, end, offset, length

Keeping each split in its own files means a training run maps only train bytes: validation and
test data are not hidden by an index filter, they are not there.

The chromosome-17 guard
-----------------------
Human chromosome 17 is reserved for evaluation and must not enter training or model selection, in
any split. Two independent checks run on every record of every source:

1. **By name** (:func:`chr17_name_reason`): ``chr17``/``17`` and their alternates and patches
   (``chr17_*``, ``HSCHR17*``), the RefSeq / GenBank / T2T accessions of human chr17 in every
   assembly (``NC_000017.*``, ``CM000679.*``, ``NC_060941.*``, ``CP068261.*``), each ``|``-field of
   NCBI ``gi|..|ref|..|`` names, and headers that say "Homo sapiens ... chromosome 17" or
   ``chromosome:GRCh38:17:``. A bare ``17`` in a non-human genome (mouse has one) is also refused
   unless that source sets ``allow_chr17_name: true``, which is itself refused for human organisms.
2. **By content** (:func:`sequence_fingerprints`): a name check cannot see chr17 that arrives
   renamed (``seq1``, a contig of a custom assembly, a region pasted into a construct). The content
   check compares sha256 fingerprints of the record against a deny-list. Fingerprints are hashes of
   *content-defined chunks*: chunk boundaries sit in the middle of each 32-mer whose (canonical,
   mixed) hash has its low 10 bits zero, one every ~1 kb on average, so the same stretch of DNA
   gives the same chunks whatever its offset, line width, case, strand, or the sequence around it
   (boundaries come from canonical k-mers and each chunk is hashed in canonical orientation). Chunks
   shorter than 512 bases, with non-ACGT bases, or of low complexity (fewer than half of their
   8-mers distinct: telomeric and simple repeats that every chromosome shares) are not
   fingerprinted. A deny-list is made once from the sequence to keep out with
   :func:`fingerprint_file`, optionally minus the chunks it shares exactly with genomes you do train
   on (``shared_with=``).

What the content check does *not* do, stated plainly: it is exact matching. It catches copies of the
sequences it was given (any assembly you fingerprint: GRCh37, GRCh38, T2T) and, almost surely, any
piece of them longer than ~8 kb (a 5 kb piece is caught ~9 times in 10); it does not catch a
diverged haplotype where every ~1 kb chunk carries a variant, nor pieces shorter than a chunk.
Measured here: GRCh37 chr20 gives 35,128 fingerprints and the first 70 Mb of chrX 38,674, of which 1
is shared, so a deny-list made from one human chromosome can trip on another by a stray exact
repeat: make it with ``shared_with=`` your training genomes, or raise ``deny_min_hits`` (default 1:
any shared fingerprint refuses the record; a real copy of a chromosome shares tens of thousands).
This project builds offline and has no copy of chr17, so the shipped deny-list
(``data/corpus/chr17_deny.sha256``) starts empty and the name guard is what stands on the default
corpus (whose human sources are chr20 and chrX, by provenance). Where chr17 is available,
``evo2lite.pipelines.corpus.fingerprint_file("chr17.fa", out=...)`` fills it, and every later build
enforces it; the tests prove the mechanism on real sequence.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from evo2lite.errors import Evo2LiteError, InputError

from .fasta import read_sequences
from .windows import find_n_runs, reverse_complement, split_on_n_runs

__all__ = [
    "ManifestError",
    "ChecksumError",
    "Chr17Error",
    "Source",
    "SplitRegion",
    "Manifest",
    "load_manifest",
    "sha256_file",
    "obtain_source",
    "verify_checksum",
    "chr17_name_reason",
    "sequence_fingerprints",
    "fingerprint_file",
    "load_deny_list",
    "build_corpus",
    "SPLITS",
    "EOS",
]

EOS = 0
SPLITS = ("train", "val", "test")
SHARD_FORMAT = "evo2lite-shards/1"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(InputError):
    """A corpus manifest that cannot be read or is invalid."""


class ChecksumError(InputError):
    """A source file whose sha256 is not the one in the manifest."""


class Chr17Error(InputError):
    """Human chromosome 17 sequence found in a corpus source."""


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SplitRegion:
    """Bases ``[start, end)`` of ``contig`` (``end=None``: to the end) go to ``split``."""

    contig: str
    start: int = 0
    end: int | None = None
    split: str
    source: str | None = None


@dataclass(frozen=True, kw_only=True)
class Source:
    name: str
    organism: str
    licence: str
    sha256: str | None
    path: str | None = None
    debian: dict | None = None
    format: str = "auto"
    split: str = "train"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    allow_chr17_name: bool = False
    soft_masked: bool = True
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    path: Path
    name: str
    sources: tuple[Source, ...]
    splits: tuple[SplitRegion, ...] = ()
    n_run_min: int = 100
    min_segment_len: int = 32
    split_seed: int = 0
    split_fractions: dict = field(default_factory=lambda: {"val": 0.05, "test": 0.05})
    chr17: str = "error"
    deny_hashes: frozenset[str] = frozenset()
    deny_min_hits: int = 1

    @property
    def root(self) -> Path:
        return self.path.parent


_REGION_TAIL = re.compile(r"^(\d[\d,_]*)-(\d[\d,_]*)$")


def parse_region(text: str) -> tuple[str, int, int | None]:
    """``"20:0-1,000,000"`` -> ``("20", 0, 1000000)``; a string without a numeric ``start-end``
    tail is a whole contig (so contig names may contain colons)."""
    head, sep, tail = text.rpartition(":")
    m = _REGION_TAIL.match(tail) if sep else None
    if not m:
        return text, 0, None
    start, end = (int(g.replace(",", "").replace("_", "")) for g in m.groups())
    return head, start, end


def _fail(manifest_path, msg: str) -> ManifestError:
    return ManifestError(f"{manifest_path}: {msg}")


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a corpus manifest (see the module docstring for the schema)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise _fail(path, f"not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("sources"), list) or not raw["sources"]:
        raise _fail(path, "a manifest is a mapping with a non-empty `sources:` list")
    known_top = {"version", "name", "description", "n_run_min", "min_segment_len", "split_seed",
                 "split_fractions", "chr17", "deny_hashes", "deny_hashes_files", "deny_min_hits", "sources", "splits"}
    unknown = set(raw) - known_top
    if unknown:
        raise _fail(path, f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(known_top)}")
    if raw.get("version", 1) != 1:
        raise _fail(path, f"manifest version {raw.get('version')!r} is not supported (this evo2lite reads version 1)")
    chr17 = raw.get("chr17", "error")
    if chr17 not in ("error", "skip"):
        raise _fail(path, f"chr17 must be 'error' or 'skip', got {chr17!r}")
    fractions = dict(raw.get("split_fractions") or {"val": 0.05, "test": 0.05})
    if set(fractions) - {"val", "test"} or sum(fractions.values()) >= 1 or min(fractions.values(), default=0) < 0:
        raise _fail(path, f"split_fractions takes val and test fractions summing below 1, got {fractions}")

    sources, names = [], set()
    known_src = {f for f in Source.__dataclass_fields__}
    for i, s in enumerate(raw["sources"]):
        if not isinstance(s, dict):
            raise _fail(path, f"sources[{i}] must be a mapping")
        name = s.get("name")
        where = f"source {name!r}" if name else f"sources[{i}]"
        unknown = set(s) - known_src
        if unknown:
            raise _fail(path, f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known_src)}")
        if not name or not _NAME_RE.match(str(name)):
            raise _fail(path, f"{where}: `name` is required and may use only letters, digits, '_', '.', '-'")
        if name in names:
            raise _fail(path, f"source name {name!r} is used twice; names must be unique")
        names.add(name)
        for key in ("organism", "licence"):
            if not s.get(key):
                raise _fail(path, f"{where}: `{key}` is required (write 'unknown' if it really is)")
        if bool(s.get("path")) == bool(s.get("debian")):
            raise _fail(path, f"{where}: give exactly one of `path:` (a local file) "
                              "or `debian:` (package, version, file)")
        if s.get("debian"):
            deb = s["debian"]
            if not isinstance(deb, dict) or not all(deb.get(k) for k in ("package", "version", "file")):
                raise _fail(path, f"{where}: `debian:` needs package, version and file (the path inside the package)")
        sha = s.get("sha256")
        if sha is not None:
            sha = str(sha).lower()
            if not _HEX64.match(sha):
                raise _fail(path, f"{where}: sha256 must be 64 hex digits, got {s.get('sha256')!r}")
        split = s.get("split", "train")
        if split not in (*SPLITS, "auto"):
            raise _fail(path, f"{where}: split must be one of train, val, test, auto; got {split!r}")
        fmt = s.get("format", "auto")
        if fmt not in ("auto", "fasta", "genbank"):
            raise _fail(path, f"{where}: format must be auto, fasta or genbank; got {fmt!r}")
        if s.get("allow_chr17_name") and _looks_human(str(s["organism"])):
            raise _fail(path, f"{where}: allow_chr17_name is refused for a human organism ({s['organism']!r})")
        sources.append(Source(
            name=name, organism=str(s["organism"]), licence=str(s["licence"]), sha256=sha,
            path=s.get("path"), debian=s.get("debian"), format=fmt, split=split,
            include=tuple(map(str, s.get("include") or ())), exclude=tuple(map(str, s.get("exclude") or ())),
            allow_chr17_name=bool(s.get("allow_chr17_name", False)), soft_masked=bool(s.get("soft_masked", True)),
            description=str(s.get("description", "")),
        ))

    regions = []
    for i, r in enumerate(raw.get("splits") or []):
        if not isinstance(r, dict) or r.get("split") not in SPLITS:
            raise _fail(path, f"splits[{i}]: needs `split:` train, val or test, and `region:` or `contig:`")
        if "region" in r:
            contig, start, end = parse_region(str(r["region"]))
        elif "contig" in r:
            contig, start, end = str(r["contig"]), int(r.get("start", 0)), r.get("end")
            end = None if end is None else int(end)
        else:
            raise _fail(path, f"splits[{i}]: give `region: CONTIG:START-END` or `contig:` (+ start/end)")
        if start < 0 or (end is not None and end <= start):
            raise _fail(path, f"splits[{i}]: empty or negative interval {contig}:{start}-{end} (0-based half-open)")
        if r.get("source") is not None and r["source"] not in names:
            raise _fail(path, f"splits[{i}]: source {r['source']!r} is not a source of this manifest")
        regions.append(SplitRegion(contig=contig, start=start, end=end, split=r["split"], source=r.get("source")))
    for a_i, a in enumerate(regions):  # overlapping overrides would make the split order-dependent
        for b in regions[a_i + 1:]:
            if a.contig == b.contig and (a.source is None or b.source is None or a.source == b.source):
                a_end = a.end if a.end is not None else float("inf")
                b_end = b.end if b.end is not None else float("inf")
                if a.start < b_end and b.start < a_end:
                    raise _fail(path, f"split regions overlap on {a.contig}: {a.start}-{a.end} and {b.start}-{b.end}")

    deny = {str(h).lower() for h in raw.get("deny_hashes") or []}
    for f in raw.get("deny_hashes_files") or []:
        deny |= load_deny_list(path.parent / f)
    bad = [h for h in deny if not _HEX64.match(h)]
    if bad:
        raise _fail(path, f"deny_hashes must be sha256 hex digests; bad: {bad[:3]}")
    return Manifest(
        path=path, name=str(raw.get("name", path.stem)), sources=tuple(sources), splits=tuple(regions),
        n_run_min=int(raw.get("n_run_min", 100)), min_segment_len=int(raw.get("min_segment_len", 32)),
        split_seed=int(raw.get("split_seed", 0)), split_fractions=fractions, chr17=chr17,
        deny_hashes=frozenset(deny), deny_min_hits=max(1, int(raw.get("deny_min_hits", 1))),
    )


# --------------------------------------------------------------------------------------------
# Obtaining and verifying
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVO2LITE_CACHE", Path.home() / ".cache" / "evo2lite")) / "debian"


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise Evo2LiteError(
            f"`{cmd[0]}` not found: Debian sources need apt-get and dpkg-deb (Debian/Ubuntu); elsewhere "
            "obtain the file yourself and point the source's `path:` at it"
        ) from exc


def _find_deb(cache: Path, package: str, version: str) -> Path | None:
    for deb in sorted(glob.glob(str(cache / f"{package}_*.deb"))):
        out = _run(["dpkg-deb", "-f", deb, "Version"], cache)
        if out.returncode == 0 and out.stdout.strip() == version:
            return Path(deb)
    return None


def obtain_source(source: Source, manifest_root: Path, cache_dir: Path | None = None) -> Path:
    """The local path of a source's file: a ``path:`` (relative to the manifest), or a file inside a
    Debian package fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x`` (no install)."""
    if source.path:
        p = Path(os.path.expanduser(source.path))
        p = p if p.is_absolute() else manifest_root / p
        if not p.is_file():
            raise InputError(f"source {source.name!r}: file {p} not found (paths are relative to the manifest)")
        return p
    deb = source.debian
    package, version, inner = deb["package"], str(deb["version"]), str(deb["file"]).lstrip("/")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "extract" / f"{package}_{version.replace(':', '%3a')}"
    if not (target / ".complete").is_file():
        debfile = _find_deb(cache, package, version)
        if debfile is None:
            out = _run(["apt-get", "download", f"{package}={version}"], cache)
            if out.returncode != 0:
                tail = " ".join(out.stderr.strip().splitlines()[-2:])
                raise Evo2LiteError(
                    f"source {source.name!r}: `apt-get download {package}={version}` failed ({tail}); run "
                    "`apt-get update` first; if that version left the archive, update version and sha256 "
                    "in the manifest"
                )
            debfile = _find_deb(cache, package, version)
            if debfile is None:
                raise Evo2LiteError(
                    f"source {source.name!r}: apt-get reported success but no {package} {version} .deb is in {cache}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        out = _run(["dpkg-deb", "-x", str(debfile), str(target)], cache)
        if out.returncode != 0:
            raise Evo2LiteError(f"source {source.name!r}: `dpkg-deb -x {debfile}` failed: {out.stderr.strip()}")
        (target / ".complete").write_text(f"{debfile.name}\n")
    p = target / inner
    if not p.is_file():
        raise InputError(f"source {source.name!r}: {inner} is not in Debian package {package} {version}; check `file:`")
    return p


def verify_checksum(source: Source, path: Path, manifest_path: Path | str = "the manifest") -> str:
    """Check the file's sha256 against the manifest; returns the digest. Raises ChecksumError."""
    actual = sha256_file(path)
    if source.sha256 is None:
        raise ChecksumError(
            f"source {source.name!r} has no sha256 in {manifest_path}; "
            f"if {path} is the file you mean, add `sha256: {actual}`"
        )
    if actual != source.sha256:
        raise ChecksumError(
            f"source {source.name!r}: sha256 of {path} is {actual}, but {manifest_path} says {source.sha256}; "
            "the file changed or is corrupt: obtain it again, or update sha256 if the change is intended"
        )
    return actual


# --------------------------------------------------------------------------------------------
# The chromosome-17 guard
# --------------------------------------------------------------------------------------------

_HUMAN_RE = re.compile(r"homo[ _]sapiens|\bhuman\b|\bhg\d+\b|\bgrch\d+|\bchm13|\bt2t\b", re.I)
# Human-specific identifiers: blocked whatever the source says its organism is.
_CHR17_ALWAYS = re.compile(
    r"(nc_000017|cm000679|nc_060941|cp068261)(\.\d+)?|hschr17(_.*)?|chr17_.+", re.I
)
_CHR17_BARE = re.compile(r"(chr)?0*17", re.I)
_CHR17_DESC = re.compile(
    r"chromosome[ _:]*17\b.*(homo sapiens|human)|(homo sapiens|human).*chromosome[ _:]*17\b"
    r"|chromosome:(grch\d+|ncbi\d+|hg\d+|t2t[^:]*|chm13[^:]*):17:",
    re.I,
)


def _looks_human(organism: str) -> bool:
    return bool(_HUMAN_RE.search(organism))


def chr17_name_reason(name: str, description: str = "", *, allow_bare: bool = False) -> str | None:
    """Why this record name/header denotes human chromosome 17, or None when it does not.

    ``allow_bare`` lets a bare ``17``/``chr17`` through (for a non-human source that declares it);
    human accessions and human headers are refused regardless.
    """
    tokens = [name] + [t for t in name.split("|") if t] if "|" in name else [name]
    for tok in tokens:
        if _CHR17_ALWAYS.fullmatch(tok):
            return f"record name {name!r} is a human chromosome 17 identifier"
        if not allow_bare and _CHR17_BARE.fullmatch(tok):
            return f"record name {name!r} is chromosome 17"
    if description and _CHR17_DESC.search(description):
        return f"header {description!r} describes human chromosome 17"
    return None


# Fingerprint parameters. Changing any of them invalidates every stored deny-list.
FP_K = 32                 # k-mer length whose hash places chunk boundaries (2 bits/base = 64 bits)
FP_MASK = (1 << 10) - 1   # a boundary where the mixed canonical k-mer hash has these bits zero: ~1 per kb
FP_MIN_CHUNK = 512        # shorter chunks are not fingerprinted (too likely shared by repeat copies)
FP_MIN_DISTINCT = 0.5     # chunks with fewer distinct 8-mers per position are low-complexity
_CODE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"ACGT"):
    _CODE[_c] = _i
    _CODE[_c + 32] = _i


def _mix64(x: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: spreads the k-mer code over all 64 bits before taking the low bits.
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _kmer_codes(codes: np.ndarray) -> np.ndarray:
    """64-bit code of the k-mer starting at each position (invalid bases read as A)."""
    h = np.where(codes != 255, codes, 0).astype(np.uint64)
    span = 1
    while span < FP_K:  # h[i] <- code of the (2*span)-mer at i, by doubling: 5 passes for k=32
        h = (h[:-span] << np.uint64(2 * span)) | h[span:]
        span *= 2
    return h


def _chunk_boundaries(codes: np.ndarray, block: int = 1 << 22) -> np.ndarray:
    """Boundaries (positions between bases) placed by canonical k-mers, so that the boundaries of the
    reverse complement are exactly the mirror images of these: strand does not change the chunks.
    Works in blocks of ``block`` k-mers to bound memory on whole chromosomes."""
    n = codes.size
    found = []
    for s in range(0, max(n - FP_K + 1, 0), block):
        sub = codes[s : min(n, s + block + FP_K - 1)]
        valid = sub != 255
        fwd = _kmer_codes(sub)
        rev = _kmer_codes(np.where(valid, 3 - sub, 255).astype(np.uint8)[::-1])[::-1]
        # rev[i] is the code of the reverse complement of the k-mer at i; the smaller is canonical.
        with np.errstate(over="ignore"):
            hit = (_mix64(np.minimum(fwd, rev)) & np.uint64(FP_MASK)) == 0
        if not valid.all():
            bad = np.concatenate([[0], np.cumsum(~valid, dtype=np.int32)])
            hit &= (bad[FP_K:] - bad[:-FP_K]) == 0
        found.append(np.flatnonzero(hit) + s)
    # The boundary sits in the middle of the anchoring k-mer: i + k/2 maps to n - i - k/2 on the
    # other strand, which is the same cut.
    return (np.concatenate(found) if found else np.zeros(0, dtype=np.int64)) + FP_K // 2


def sequence_fingerprints(seq: bytes | np.ndarray) -> set[str]:
    """sha256 hex digests of the content-defined chunks of ``seq``, the same for either strand and
    any case: each chunk is hashed in its canonical orientation (the smaller of it and its reverse
    complement).

    Only whole chunks between two boundaries count (the ends of a sequence depend on where it was
    cut); chunks shorter than ``FP_MIN_CHUNK``, with non-ACGT bases, or of low complexity are skipped.
    """
    upper = (seq if isinstance(seq, bytes) else bytes(seq)).upper()
    codes = _CODE[np.frombuffer(upper, dtype=np.uint8)]
    bounds = _chunk_boundaries(codes)
    starts, ends = bounds[:-1], bounds[1:]
    keep = (ends - starts) >= FP_MIN_CHUNK
    if codes.size and (codes == 255).any():
        bad = np.concatenate([[0], np.cumsum(codes == 255, dtype=np.int64)])
        keep &= (bad[ends] - bad[starts]) == 0
    out: set[str] = set()
    starts, ends = starts[keep], ends[keep]
    for g in range(0, starts.size, 256):  # groups of chunks: vectorised complexity test, bounded memory
        gs, ge = starts[g : g + 256], ends[g : g + 256]
        lens = ge - gs - 7  # 8-mers per chunk
        pos = np.repeat(gs - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())
        k8 = np.zeros(pos.size, dtype=np.uint32)
        for j in range(8):
            k8 = (k8 << np.uint32(2)) | codes[pos + j]
        chunk_id = np.repeat(np.arange(gs.size, dtype=np.uint64), lens)
        keys = np.sort((chunk_id << np.uint64(16)) | k8)  # a sort, not np.unique: numpy 2's hash path is slow here
        first = np.concatenate([[True], keys[1:] != keys[:-1]])
        distinct = np.bincount((keys[first] >> np.uint64(16)).astype(np.int64), minlength=gs.size)
        for a, b, d, m in zip(gs.tolist(), ge.tolist(), distinct.tolist(), lens.tolist()):
            if d < FP_MIN_DISTINCT * m:
                continue
            chunk = upper[a:b]
            out.add(hashlib.sha256(min(chunk, reverse_complement(chunk))).hexdigest())
    return out


def fingerprint_file(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    shared_with: Iterable[str | os.PathLike] = (),
) -> list[str]:
    """Fingerprints of every record in a FASTA/GenBank file, sorted; with ``out``, also written there
    as a deny-list file (one digest per line, ``#`` comments).

    ``shared_with`` names files whose fingerprints are removed from the list: chunks that chr17 shares
    exactly with the genomes you do train on (recent segmental duplications, young repeats) are not
    chr17-specific and would only refuse those genomes.
    """
    digests: set[str] = set()
    for rec in read_sequences(path):
        digests |= sequence_fingerprints(rec.seq)
    removed = 0
    for other in shared_with:
        for rec in read_sequences(other):
            common = digests & sequence_fingerprints(rec.seq)
            removed += len(common)
            digests -= common
    result = sorted(digests)
    if out is not None:
        with open(out, "w") as fh:
            fh.write(f"# evo2lite sequence deny-list: canonical content-defined chunk sha256 (k={FP_K}, "
                     f"mask={FP_MASK:#x}, min_chunk={FP_MIN_CHUNK}) of {Path(path).name}")
            fh.write(f"; {removed} chunks shared with other genomes removed\n" if removed else "\n")
            fh.writelines(d + "\n" for d in result)
    return result


def load_deny_list(path: str | os.PathLike) -> set[str]:
    """Read a deny-list file: one sha256 hex digest per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"deny-list {path} not found (paths are relative to the manifest)")
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            out.add(line)
    return out


# --------------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------------

_IUPAC_OK = np.zeros(256, dtype=bool)
for _c in b"ACGTUNRYKMSWBDHV":
    _IUPAC_OK[_c] = True
    _IUPAC_OK[_c + 32] = True


def _auto_split(seed: int, source: str, record: str, fractions: dict) -> str:
    digest = hashlib.sha256(f"{seed}\0{source}\0{record}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    val = fractions.get("val", 0.0)
    if u < val:
        return "val"
    if u < val + fractions.get("test", 0.0):
        return "test"
    return "train"


def _assign_splits(start: int, end: int, default: str, regions: list[SplitRegion]) -> list[tuple[int, int, str]]:
    """Cut ``[start, end)`` at the override regions; each piece gets its split."""
    pieces, pos = [], start
    for r in sorted(regions, key=lambda r: r.start):
        r_end = end if r.end is None else min(r.end, end)
        r_start = max(r.start, start)
        if r_start >= r_end:
            continue
        if r_start > pos:
            pieces.append((pos, r_start, default))
        pieces.append((r_start, r_end, r.split))
        pos = r_end
    if pos < end:
        pieces.append((pos, end, default))
    return pieces


class _SplitWriter:
    def __init__(self, folder: Path, split: str):
        self.folder = folder / split
        self.folder.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.tokens = open(self.folder / "tokens.bin", "wb")
        self.mask = open(self.folder / "mask.bin", "wb")
        self.offset = 0
        self.entries: list[dict] = []

    def add(self, tokens: np.ndarray, mask: np.ndarray, meta: dict) -> None:
        n = tokens.size
        self.tokens.write(tokens.tobytes())
        self.tokens.write(bytes([EOS]))
        self.mask.write(mask.tobytes())
        self.mask.write(b"\x00")
        self.entries.append({**meta, "offset": self.offset, "length": n})
        self.offset += n + 1

    def close(self) -> dict:
        self.tokens.close()
        self.mask.close()
        index = {"format": SHARD_FORMAT, "split": self.split, "num_tokens": self.offset,
                 "num_records": len(self.entries), "eos": EOS, "entries": self.entries}
        (self.folder / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
        return {"records": len(self.entries), "tokens": self.offset,
                "bases": self.offset - len(self.entries)}


def _say(progress: bool) -> Callable[[str], None]:
    if not progress:
        return lambda msg: None
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    return lambda msg: console.print(msg)


def build_corpus(
    manifest_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Obtain, verify and pack every source of a manifest into ``out_dir`` (layout in the module
    docstring). Returns the build summary that is also written to ``out_dir/corpus.json``.

    Raises ManifestError, ChecksumError (names the source), Chr17Error, InputError (bad bases).
    Output is a pure function of the manifest and the source files (byte-identical on rebuild).
    """
    manifest = load_manifest(manifest_path)
    out = Path(out_dir)
    if (out / "corpus.json").exists() and not overwrite:
        raise Evo2LiteError(f"{out} already holds a corpus; choose another folder or pass overwrite=True (--overwrite)")
    say = _say(progress)
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".partial"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    writers: dict[str, _SplitWriter] = {}
    summary_sources, excluded = [], []
    try:
        for i, src in enumerate(manifest.sources, 1):
            say(f"[{i}/{len(manifest.sources)}] {src.name}: obtaining")
            path = obtain_source(src, manifest.root, cache_dir)
            digest = verify_checksum(src, path, manifest.path)
            say(f"[{i}/{len(manifest.sources)}] {src.name}: sha256 ok, packing {path.name}")
            stats = _pack_source(manifest, src, path, writers, work, excluded)
            summary_sources.append({"name": src.name, "organism": src.organism, "licence": src.licence,
                                    "file": path.name, "sha256": digest, **stats})
        split_totals = {s: w.close() for s, w in sorted(writers.items())}
    except BaseException:
        for w in writers.values():
            w.tokens.close()
            w.mask.close()
        shutil.rmtree(work, ignore_errors=True)
        raise
    summary = {
        "format": SHARD_FORMAT,
        "manifest": manifest.name,
        "manifest_sha256": sha256_file(manifest.path),
        "n_run_min": manifest.n_run_min,
        "min_segment_len": manifest.min_segment_len,
        "chr17_guard": {"policy": manifest.chr17, "deny_hashes": len(manifest.deny_hashes),
                        "deny_min_hits": manifest.deny_min_hits, "excluded": excluded},
        "splits": split_totals,
        "sources": summary_sources,
    }
    (work / "corpus.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    for name in (*SPLITS, "corpus.json"):
        if (out / name).exists():
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    for item in work.iterdir():
        item.rename(out / item.name)
    work.rmdir()
    say(f"corpus written to {out}: " + ", ".join(f"{s} {t['bases']:,} bases in {t['records']} records"
                                                  for s, t in split_totals.items()))
    return summary


def _pack_source(manifest: Manifest, src: Source, path: Path, writers: dict, work: Path, excluded: list) -> dict:
    regions_by_contig: dict[str, list[SplitRegion]] = {}
    for r in manifest.splits:
        if r.source is None or r.source == src.name:
            regions_by_contig.setdefault(r.contig, []).append(r)
    include, exclude = set(src.include), set(src.exclude)
    seen_include: set[str] = set()
    n_chr17 = 0
    stats = {"records": 0, "bases": 0, "n_bases_dropped": 0, "short_pieces_dropped": 0, "soft_masked": 0}
    for rec in read_sequences(path, src.format):
        if include and rec.name not in include:
            continue
        seen_include.add(rec.name)
        if rec.name in exclude:
            continue
        reason = chr17_name_reason(rec.name, rec.description, allow_bare=src.allow_chr17_name)
        if reason is None and manifest.deny_hashes and rec.seq:
            hits = sequence_fingerprints(rec.seq) & manifest.deny_hashes
            if len(hits) >= manifest.deny_min_hits:
                reason = (f"record {rec.name!r} shares {len(hits)} sequence fingerprint(s) with the deny-list "
                          f"(e.g. {sorted(hits)[0][:16]}...)")
        if reason is not None:
            if manifest.chr17 == "error":
                raise Chr17Error(
                    f"source {src.name!r}: {reason}; human chromosome 17 must not enter the corpus: remove it "
                    "(`exclude:` in the source) or set `chr17: skip` in the manifest to drop such records"
                )
            excluded.append({"source": src.name, "record": rec.name, "reason": reason})
            n_chr17 += 1
            continue
        arr = np.frombuffer(rec.seq, dtype=np.uint8)
        ok = _IUPAC_OK[arr]
        if not ok.all():
            pos = int(np.flatnonzero(~ok)[0])
            raise InputError(
                f"source {src.name!r}, record {rec.name!r}: byte {chr(arr[pos])!r} at position {pos} is not an "
                "IUPAC nucleotide code; a corpus takes DNA only (is this a protein FASTA?)"
            )
        lower = arr >= ord("a")  # every accepted byte is a letter, so this is exactly 'lower case'
        upper = arr - (lower.astype(np.uint8) << 5)
        # Lower case means soft-masked (repeats) unless the source says its case carries no meaning
        # (some files are lower case throughout).
        mask = lower.astype(np.uint8) if src.soft_masked else np.zeros_like(upper)
        n_runs = find_n_runs(upper, manifest.n_run_min)
        stats["records"] += 1
        stats["n_bases_dropped"] += sum(e - s for s, e in n_runs)
        default = src.split if src.split != "auto" else _auto_split(
            manifest.split_seed, src.name, rec.name, manifest.split_fractions)
        for a, b in split_on_n_runs(arr.size, n_runs):
            for s, e, split in _assign_splits(a, b, default, regions_by_contig.get(rec.name, [])):
                if e - s < manifest.min_segment_len:
                    stats["short_pieces_dropped"] += 1
                    continue
                if split not in writers:
                    writers[split] = _SplitWriter(work, split)
                full = s == 0 and e == arr.size
                writers[split].add(upper[s:e], mask[s:e], {
                    "name": rec.name if full else f"{rec.name}:{s}-{e}", "record": rec.name,
                    "source": src.name, "organism": src.organism, "start": s, "end": e})
                stats["bases"] += e - s
                stats["soft_masked"] += int(mask[s:e].sum())
    missing = include - seen_include
    if missing:
        raise InputError(f"source {src.name!r}: `include` names records not in {path.name}: {sorted(missing)[:5]}")
    if stats["records"] == 0 and n_chr17 == 0:
        raise InputError(
            f"source {src.name!r}: no records read from {path.name} (empty file, or include/exclude removed all)")
    return stats


def _main(argv: Iterable[str] | None = None) -> int:  # python -m evo2lite.pipelines.corpus MANIFEST OUT
    import argparse

    ap = argparse.ArgumentParser(prog="python -m evo2lite.pipelines.corpus",
                                 description="build a corpus from a manifest")
    ap.add_argument("manifest")
    ap.add_argument("out_dir")
    ap.add_argument("--cache-dir")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    try:
        build_corpus(args.manifest, args.out_dir, cache_dir=args.cache_dir, overwrite=args.overwrite)
    except Evo2LiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
