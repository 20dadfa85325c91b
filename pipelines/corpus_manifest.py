"""Corpus manifests: the schema (see pipelines.corpus for a full example) and its validation.

Split regions (``splits:``) are parsed by the one region parser, pipelines.regions, in the convention
the manifest states with ``coordinates:`` (``0-based`` half-open like BED, the default, or ``1-based``
inclusive like samtools); inside they are 0-based half-open.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from evo2lite.errors import InputError

from .corpus_guard import _looks_human, load_deny_list

__all__ = ["ManifestError", "ChecksumError", "Source", "SplitRegion", "Manifest", "load_manifest", "parse_region",
           "COORDINATES", "SPLITS"]

SPLITS = ("train", "val", "test")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(InputError):
    """A corpus manifest that cannot be read or is invalid."""


class ChecksumError(InputError):
    """A source file whose sha256 is not the one in the manifest."""


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


COORDINATES = ("0-based", "1-based")


def parse_region(text: str, coordinates: str = "0-based") -> tuple[str, int, int | None]:
    """A manifest's ``region:`` string -> (contig, 0-based start, end or None), through the one region
    parser (pipelines.regions). ``coordinates`` is the manifest's convention: ``0-based`` (half-open,
    like BED: ``"20:0-1,000,000"`` is the first megabase) or ``1-based`` (inclusive, samtools:
    ``"20:1-1,000,000"``). Text without a numeric ``start-end`` tail is a whole contig (so contig names
    may contain colons)."""
    from .regions import parse_region as parse

    region = parse(text, one_based=coordinates == "1-based")
    if region.end is None and region.contig != text.strip():
        return text.strip(), 0, None  # `name:123` has no start-end tail: the colons are in the name
    return region.contig, region.start, region.end


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
    known_top = {"version", "name", "description", "coordinates", "n_run_min", "min_segment_len", "split_seed",
                 "split_fractions", "chr17", "deny_hashes", "deny_hashes_files", "deny_min_hits", "sources", "splits"}
    unknown = set(raw) - known_top
    if unknown:
        raise _fail(path, f"unknown top-level keys {sorted(unknown)}; allowed: {sorted(known_top)}")
    if raw.get("version", 1) != 1:
        raise _fail(path, f"manifest version {raw.get('version')!r} is not supported (this evo2lite reads version 1)")
    coordinates = raw.get("coordinates", "0-based")
    if coordinates not in COORDINATES:
        raise _fail(path, f"coordinates must be 0-based (half-open, like BED) or 1-based (inclusive, like "
                          f"samtools), got {coordinates!r}")
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
            try:
                contig, start, end = parse_region(str(r["region"]), coordinates)
            except InputError as exc:
                raise _fail(path, f"splits[{i}]: {exc}") from None
        elif "contig" in r:
            contig, start, end = str(r["contig"]), int(r.get("start", 0)), r.get("end")
            end = None if end is None else int(end)
            if coordinates == "1-based" and "start" in r:
                start -= 1  # start..end inclusive, 1-based -> 0-based half-open
        else:
            raise _fail(path, f"splits[{i}]: give `region: CONTIG:START-END` or `contig:` (+ start/end)")
        if start < 0 or (end is not None and end <= start):
            raise _fail(path, f"splits[{i}]: empty or negative interval {r.get('region') or contig} ({coordinates})")
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
