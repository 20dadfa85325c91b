"""The chromosome-17 guard of corpus builds: by record name and by sequence content.

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

import hashlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from evo2lite.errors import InputError

from .fasta import read_sequences
from .windows import reverse_complement

__all__ = ["Chr17Error", "chr17_name_reason", "sequence_fingerprints", "fingerprint_file", "load_deny_list",
           "FP_K", "FP_MASK", "FP_MIN_CHUNK", "FP_MIN_DISTINCT"]


class Chr17Error(InputError):
    """Human chromosome 17 sequence found in a corpus source."""


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
        from .corpus_manifest import ManifestError

        raise ManifestError(f"deny-list {path} not found (paths are relative to the manifest)")
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip().lower()
        if line:
            out.add(line)
    return out
