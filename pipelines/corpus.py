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
    coordinates: 0-based      # of `splits:` below: 0-based (half-open, BED; the default) or 1-based
                              # (inclusive, samtools -r syntax); parsed by pipelines.regions
    splits:                                     # region overrides
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

The chromosome-17 guard that every record passes is in corpus_guard; the manifest schema and its
parsing in corpus_manifest; obtaining and checksumming sources in corpus_sources. The public names
of all four are importable from here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from evo2lite.errors import Evo2LiteError, InputError

# the public names of the corpus_* modules are importable from here too
from .corpus_guard import Chr17Error, chr17_name_reason, fingerprint_file, load_deny_list, sequence_fingerprints
from .corpus_manifest import (SPLITS, ChecksumError, Manifest, ManifestError, Source, SplitRegion, load_manifest,
                              parse_region)
from .corpus_sources import obtain_source, sha256_file, verify_checksum
from .fasta import read_sequences
from .windows import find_n_runs, split_on_n_runs

__all__ = [
    "ManifestError",
    "ChecksumError",
    "Chr17Error",
    "Source",
    "SplitRegion",
    "Manifest",
    "load_manifest",
    "parse_region",
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
SHARD_FORMAT = "evo2lite-shards/1"


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
