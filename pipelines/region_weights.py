"""Sampling weights for regions of a training split, and the BED of annotated exons that pilot 3 up-weights.

A region BED (0-based half-open, :func:`evo2lite.pipelines.regions.read_bed`) names records as the corpus
index does (the ``record`` of an entry, e.g. ``20`` or ``X``; ``chr20`` finds ``20``) with positions in that
record. A split holds pieces of records (index entries: record, start, end, offset into tokens.bin), so an
interval maps to the stream positions of the pieces of this split it overlaps; the parts outside every piece
(another split, an N gap) are left out and counted. That is why a weight can only ever touch the split
being sampled: val and test bytes are not in the train split's stream at all.

:class:`StreamRegions` answers, for windows of the stream, how many region bases each holds;
``TokenWindowDataset(region_bed=..., region_weight=w)`` draws every window that holds at least one region
base ``w`` times per epoch (see :mod:`evo2lite.pipelines.datasets`).

Exon BED (pilot 3 of evo2lite-base, data/train/base3.yaml): exons of a SAF annotation (featureCounts'
``GeneID Chr Start End Strand``, 1-based inclusive; e.g. Rsubread's hg19_RefSeq_exon.txt) on records of
one organism in the split, padded, clipped to the split's pieces and merged::

    python -m evo2lite.pipelines.region_weights hg19_RefSeq_exon.txt .carry/train2bit \\
        --organism "Homo sapiens" --pad 200 -o .carry/train2bit/human_exons_pad200.bed
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .fasta import contig_key
from .regions import Region, RegionError, read_bed

__all__ = ["StreamRegions", "exon_intervals", "read_saf", "split_index", "write_bed"]


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint union of half-open intervals (touching ones joined)."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    if starts.size == 0:
        return starts.astype(np.int64), ends.astype(np.int64)
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    new = np.concatenate([[True], starts[1:] > reach[:-1]])
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:], [starts.size]]) - 1
    return starts[first].astype(np.int64), reach[last].astype(np.int64)


def _records(entries: list[dict]) -> dict[str, list[dict]]:
    """contig_key(record) -> the entries (pieces) of that record; a key shared by two sources is an error
    when used (see StreamRegions)."""
    out: dict[str, list[dict]] = {}
    for e in entries:
        out.setdefault(contig_key(e["record"]), []).append(e)
    return out


class StreamRegions:
    """Regions of one split as sorted, disjoint stream intervals ``[starts[i], ends[i])`` of its tokens.bin."""

    def __init__(self, regions: Iterable[Region], entries: list[dict], where: str = "regions"):
        by_key = _records(entries)
        starts, ends = [], []
        given = outside = 0
        for r in regions:
            pieces = by_key.get(contig_key(r.contig))
            if pieces is None:
                names = sorted({e["record"] for e in entries})
                shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
                raise RegionError(f"{where}: contig {r.contig!r} is no record of this split (it has {shown}); "
                                  "BED contigs are the corpus's record names, positions within the record")
            sources = {e["source"] for e in pieces}
            if len(sources) > 1:
                raise RegionError(f"{where}: contig {r.contig!r} names records of several sources "
                                  f"({', '.join(sorted(sources))}); name the organism (region_weights `organism:`)")
            end = r.end if r.end is not None else max(e["end"] for e in pieces)
            given += end - r.start
            inside = 0
            for e in pieces:
                a, b = max(r.start, e["start"]), min(end, e["end"])
                if a < b:
                    starts.append(e["offset"] + a - e["start"])
                    ends.append(e["offset"] + b - e["start"])
                    inside += b - a
            outside += end - r.start - inside
        self.starts, self.ends = _merge(np.array(starts, np.int64), np.array(ends, np.int64))
        self._cum = np.concatenate([[0], np.cumsum(self.ends - self.starts)])
        self.bases = int(self._cum[-1])
        self.bases_outside = int(outside)  # BED bases in no piece of this split (other splits, N gaps)
        if given == 0:
            raise RegionError(f"{where}: the BED has no intervals (or only empty ones)")
        if self.bases == 0:
            raise RegionError(f"{where}: none of its {given:,} bases lies in this split; check that the "
                              "BED uses the corpus's record coordinates (0-based) and names train records")

    def covered(self, pos: np.ndarray) -> np.ndarray:
        """Region bases at stream positions < pos (vectorised)."""
        pos = np.asarray(pos, dtype=np.int64)
        i = np.searchsorted(self.starts, pos, side="right")  # intervals starting before pos
        prev_end = self.ends[np.maximum(i - 1, 0)]
        spill = np.where(i > 0, np.maximum(prev_end - pos, 0), 0)  # the part of interval i-1 at or after pos
        return self._cum[i] - spill

    def in_windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Region bases inside each window [start, start + length)."""
        starts = np.asarray(starts, dtype=np.int64)
        return self.covered(starts + length) - self.covered(starts)

    @staticmethod
    def file_id(path: str | Path) -> str:
        """sha256 of the BED file (16 hex digits), recorded in the loader state so resume checks it."""
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# --- the exon BED -----------------------------------------------------------------------------------

def read_saf(path: str | Path) -> dict[str, list[tuple[int, int]]]:
    """Exons of a SAF annotation (GeneID Chr Start End Strand, 1-based inclusive; header optional) as
    {contig_key(Chr): [(start, end) 0-based half-open, ...]}."""
    out: dict[str, list[tuple[int, int]]] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            for number, line in enumerate(fh, start=1):
                f = line.split()
                if not f or f[0] == "GeneID" or line.startswith("#"):
                    continue
                try:
                    start, end = int(f[2]) - 1, int(f[3])
                except (IndexError, ValueError):
                    raise RegionError(f"{path}:{number}: not a SAF line (GeneID Chr Start End Strand): "
                                      f"{line.strip()[:60]!r}") from None
                if not 0 <= start < end:
                    raise RegionError(f"{path}:{number}: exon {f[1]}:{f[2]}-{f[3]} needs 1 <= Start <= End")
                out.setdefault(contig_key(f[1]), []).append((start, end))
    except OSError as exc:
        raise RegionError(f"cannot read annotation {path}: {exc.strerror or exc}") from None
    return out


def exon_intervals(exons: dict[str, list[tuple[int, int]]], entries: list[dict], pad: int,
                   organism: str | None = None) -> list[tuple[str, int, int]]:
    """(record, start, end) in record coordinates: exons padded by `pad` on each side, clipped to the
    pieces of the split (of `organism` only, when given), merged; sorted by record, then start."""
    if pad < 0:
        raise RegionError(f"pad must be >= 0, got {pad}")
    clipped: dict[str, tuple[list, list]] = {}  # record -> (starts, ends) of the padded exons in its pieces
    for key, pieces in sorted(_records([e for e in entries if organism in (None, e["organism"])]).items()):
        if key not in exons or len({e["source"] for e in pieces}) > 1:
            continue
        ex = np.array(exons[key], dtype=np.int64).reshape(-1, 2)
        s, t = _merge(ex[:, 0] - pad, ex[:, 1] + pad)
        for e in pieces:
            a, b = np.maximum(s, e["start"]), np.minimum(t, e["end"])
            starts, ends = clipped.setdefault(e["record"], ([], []))
            starts.append(a)
            ends.append(b)
    # a record's pieces are disjoint, so its clipped parts only touch: one more merge joins them
    out: list[tuple[str, int, int]] = []
    for rec in sorted(clipped):
        a, b = _merge(np.concatenate(clipped[rec][0]), np.concatenate(clipped[rec][1]))
        out += [(rec, int(x), int(y)) for x, y in zip(a, b)]
    return out


def split_index(corpus: str | Path, split: str = "train") -> dict:
    """index.json of a split of a built corpus (split/index.json) or of a 2-bit pack (split.index.json.gz)."""
    corpus = Path(corpus)
    for path, read in ((corpus / split / "index.json", lambda p: p.read_bytes()),
                       (corpus / f"{split}.index.json.gz", lambda p: gzip.decompress(p.read_bytes()))):
        if path.is_file():
            return json.loads(read(path))
    raise RegionError(f"{corpus}: no {split!r} split (neither {split}/index.json nor {split}.index.json.gz)")


def write_bed(path: str | Path, rows: list[tuple[str, int, int]], header: list[str]) -> None:
    """A BED file (header lines as '#' comments), written atomically."""
    from evo2lite.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w") as fh:
            fh.writelines(f"# {h}\n" for h in header)
            fh.writelines(f"{rec}\t{a}\t{b}\n" for rec, a, b in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="BED of annotated exons (padded, merged) of one split of a corpus, "
                                             "in the corpus's record coordinates: a region_weights BED")
    ap.add_argument("annotation", help="SAF exon table (GeneID Chr Start End Strand; 1-based), e.g. Rsubread's "
                                       "annot/hg19_RefSeq_exon.txt")
    ap.add_argument("corpus", help="a built corpus folder or its 2-bit pack")
    ap.add_argument("-o", "--out", required=True, help="output BED")
    ap.add_argument("--split", default="train")
    ap.add_argument("--pad", type=int, default=200, help="bases added on each side of every exon (default 200)")
    ap.add_argument("--organism", default="Homo sapiens", help="only records of this organism ('' for all)")
    args = ap.parse_args(argv)
    try:
        index = split_index(args.corpus, args.split)
        rows = exon_intervals(read_saf(args.annotation), index["entries"], args.pad, args.organism or None)
        if not rows:
            raise RegionError(f"no exon of {args.annotation} lies in the {args.split!r} split "
                              f"({args.organism or 'any organism'}): contig names or organism do not match")
        ann_id = hashlib.sha256(Path(args.annotation).read_bytes()).hexdigest()
        write_bed(args.out, rows, [f"exons of {Path(args.annotation).name} (sha256 {ann_id}) +- {args.pad} bases, "
                                   f"merged, clipped to the {args.split} split of {args.corpus} "
                                   f"({args.organism or 'all organisms'}); record coordinates, 0-based"])
    except RegionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bases = sum(b - a for _, a, b in rows)
    split_bases = sum(e["length"] for e in index["entries"] if args.organism in ("", e["organism"]))
    print(f"{len(rows):,} intervals, {bases:,} bases ({bases / max(split_bases, 1):.2%} of the split's "
          f"{split_bases:,} {args.organism or ''} bases) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
