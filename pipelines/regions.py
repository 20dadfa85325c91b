"""Genomic regions: the one region-string parser and the one BED reader of every command.

Conventions: a region string on the command line is samtools syntax, 1-based and inclusive
(``chr``, ``chr:pos`` = from pos to the end of the contig, ``chr:start-end``, ``chr:start-``; thousands
separators allowed: ``20:1,450,000-1,456,000``; ``{name:with:colons}:start-end`` for contig names that
hold colons). BED is 0-based half-open. Inside, a :class:`Region` is always 0-based half-open, with
``end=None`` meaning "to the end of the contig".

* :func:`parse_region` / :func:`parse_regions`: strings -> regions (repeated options add up).
* :func:`read_bed`: a BED file (plain or gzip) -> regions; header, ``track`` and ``browser`` lines skipped.
* :func:`resolve_regions`: check regions against a reference's contigs (unknown contig or a span
  outside the contig is an error) and give each its concrete end.
* :class:`RegionSet`: overlap queries for filtering records.

Every problem raises :class:`RegionError` (an ``InputError`` and a ``ValueError``) with a one-line message.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from evo2lite.errors import InputError
from evo2lite.pipelines.fasta import contig_key, open_binary
from evo2lite.pipelines.vcf import to_zero_based

__all__ = ["Region", "RegionError", "RegionSet", "parse_region", "parse_regions", "read_bed",
           "resolve_regions", "regions_from_options"]


class RegionError(InputError, ValueError):
    """A malformed region string or BED line, or a region that does not fit the reference."""


@dataclass(frozen=True)
class Region:
    """``[start, end)`` of ``contig``, 0-based half-open; ``end=None`` is the end of the contig.
    ``name`` (BED column 4, or the text it was parsed from) is a label only: it takes no part in equality."""

    contig: str
    start: int = 0
    end: int | None = None
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.start < 0 or (self.end is not None and self.end < self.start):
            raise RegionError(f"region {self.contig}:{self.start}-{self.end} needs 0 <= start <= end (0-based)")

    @property
    def label(self) -> str:
        """samtools-style 1-based text: ``chr``, ``chr:start-`` or ``chr:start-end``."""
        if self.start == 0 and self.end is None:
            return self.contig
        return f"{self.contig}:{self.start + 1}-{'' if self.end is None else self.end}"


# start[-[end]]: digits with optional thousands separators
_SPAN = re.compile(r"^(?P<start>[0-9][0-9,]*)(?P<dash>-(?P<end>[0-9][0-9,]*)?)?$")


def _number(text: str, region: str) -> int:
    groups = text.split(",")
    if len(groups) > 1 and (not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:])):
        raise RegionError(f"region {region!r}: {text!r} is not a number (thousands separators go every 3 digits)")
    return int(text.replace(",", ""))


def parse_region(text: str, *, one_based: bool = True) -> Region:
    """A :class:`Region` from samtools syntax (1-based inclusive on the command line).

    ``chr`` is the whole contig, ``chr:pos`` and ``chr:start-`` run to its end, ``chr:start-end`` is
    bases start..end inclusive. A contig name containing ``:`` can be written in braces, ``{HLA:1}:5-9``;
    without braces, text whose part after the last ``:`` is not a position is taken as a whole contig
    name, and :func:`resolve_regions` also tries the whole text as a contig name (samtools' rule for
    ``HLA-A*01:01:01:01``, whose tail looks like a position). ``one_based=False`` reads the numbers as
    0-based half-open instead (BED-like, as a corpus manifest with ``coordinates: 0-based`` says).
    """
    raw = str(text)
    text = raw.strip()
    convention = "1-based, inclusive" if one_based else "0-based, half-open"
    if not text:
        raise RegionError(f"empty region: want chr, chr:pos or chr:start-end ({convention})")
    if text.startswith("{"):
        close = text.find("}")
        if close < 0:
            raise RegionError(f"region {raw!r}: unclosed '{{' around the contig name")
        contig, rest = text[1:close], text[close + 1:]
        if rest and not rest.startswith(":"):
            raise RegionError(f"region {raw!r}: want {{contig}}:start-end")
        span = rest[1:] if rest else None
    else:
        contig, sep, span = text.rpartition(":")
        if not sep:
            contig, span = text, None
        elif not _SPAN.match(span) and not re.match(r"^[0-9,\-]*$", span):
            contig, span = text, None  # a colon inside the name (HLA-A*01:01): a whole contig
    if not contig or any(c.isspace() for c in contig):
        raise RegionError(f"region {raw!r}: want chr, chr:pos or chr:start-end ({convention})")
    if span is None:
        return Region(contig, 0, None, name=text)
    match = _SPAN.match(span)
    if match is None:
        raise RegionError(f"region {raw!r}: want chr:start-end with whole numbers ({convention})")
    first = _number(match["start"], raw)
    end = _number(match["end"], raw) if match["end"] else None
    if one_based and first < 1:
        raise RegionError(f"region {raw!r}: positions are 1-based, so start must be >= 1")
    start = to_zero_based(first) if one_based else first
    if end is not None and (end < first if one_based else end <= start):
        raise RegionError(f"region {raw!r}: end {end:,} is before start {first:,} ({convention})")
    return Region(contig, start, end, name=text)


def parse_regions(texts: Iterable[str]) -> list[Region]:
    """Every region of a repeated option, in the order given (they add up; none are merged here)."""
    if isinstance(texts, str):
        texts = [texts]
    return [parse_region(t) for t in texts]


def read_bed(path: str | os.PathLike) -> list[Region]:
    """The intervals of a BED file (plain, gzip or BGZF; 0-based half-open). Blank, ``#``, ``track`` and
    ``browser`` lines are skipped; column 4, when present, becomes the region's name."""
    regions = []
    if not os.path.isfile(path):
        raise RegionError(f"{path}: no such BED file")
    with open_binary(path) as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            try:
                contig, start, end = cols[0], int(cols[1]), int(cols[2])
            except (IndexError, ValueError):
                raise RegionError(f"{path}:{number}: not a BED line (need contig, start, end; 0-based, "
                                  f"tab-separated): {line[:60]!r}") from None
            if not 0 <= start <= end:
                raise RegionError(f"{path}:{number}: BED interval {contig} {start} {end} needs 0 <= start <= end")
            name = cols[3] if len(cols) > 3 and cols[3] not in ("", ".") else None
            regions.append(Region(contig, start, end, name=name))
    return regions


def regions_from_options(regions: Iterable[str] | None = None,
                         regions_files: Iterable[str | os.PathLike] | str | os.PathLike | None = None
                         ) -> list[Region] | None:
    """``-r/--regions`` (repeatable strings) plus ``-R/--regions-file`` (BED files): None when neither is given."""
    texts = list(regions or ())
    if isinstance(regions_files, (str, os.PathLike)):
        regions_files = [regions_files]
    files = list(regions_files or ())
    if not texts and not files:
        return None
    out = parse_regions(texts)
    for path in files:
        bed = read_bed(path)
        if not bed:
            raise RegionError(f"{path}: the BED file has no intervals")
        out.extend(bed)
    return out


def resolve_regions(regions: Iterable[Region], contigs: Mapping[str, int],
                    resolve: Callable[[str], str] | None = None) -> list[Region]:
    """Regions with the reference's contig names and concrete ends. ``resolve(name)`` maps a name to a
    reference contig (e.g. ``ReferenceGenome.resolve``, with chr/MT aliasing) and raises for an unknown
    one; the default is an exact match. A region reaching past its contig is an error."""
    out = []
    for region in regions:
        contig = _lookup(region.contig, contigs, resolve)
        if contig is None and region.name and region.name != region.contig and region.end is None:
            # samtools' rule: text that names a contig whole (HLA-A*01:01:01:01) is that contig
            contig = _lookup(region.name, contigs, resolve)
            if contig is not None:
                region = Region(contig, 0, None, name=region.name)
        if contig is None:
            names = ", ".join(list(contigs)[:8]) + (", ..." if len(contigs) > 8 else "")
            raise RegionError(f"region {region.label}: contig {region.contig!r} is not in the reference "
                              f"(it has {names})")
        length = contigs[contig]
        end = length if region.end is None else region.end
        if end > length or region.start >= max(length, 1):
            raise RegionError(f"region {region.label} is outside contig {contig} (length {length:,})")
        out.append(replace(region, contig=contig, end=end))
    return out


def _lookup(name: str, contigs: Mapping[str, int], resolve) -> str | None:
    try:
        contig = resolve(name) if resolve is not None else name
    except InputError:
        return None
    return contig if contig in contigs else None


class RegionSet:
    """Regions queried by overlap; contig names match through :func:`contig_key` (chr/MT aliases)."""

    def __init__(self, regions: Iterable[Region]):
        self.regions = list(regions)
        merged: dict[str, list[tuple[int, int]]] = {}
        big = 1 << 62
        for region in sorted(self.regions, key=lambda r: (contig_key(r.contig), r.start, r.end or big)):
            end = big if region.end is None else region.end
            spans = merged.setdefault(contig_key(region.contig), [])
            if spans and region.start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((region.start, end))
        self._spans = merged
        self._starts = {k: [s for s, _ in v] for k, v in merged.items()}
        self._hit: set[tuple[str, int]] = set()

    def overlaps(self, contig: str, start: int, end: int) -> bool:
        """Whether ``[start, end)`` overlaps a region; an empty span counts as its first base. Hits are
        remembered for :meth:`unmatched`."""
        key = contig_key(contig)
        spans = self._spans.get(key)
        if not spans:
            return False
        end = max(end, start + 1)
        # Spans are merged, so only the last one starting before the query's end can overlap it.
        i = bisect.bisect_left(self._starts[key], end) - 1
        if i >= 0 and spans[i][1] > start:
            self._hit.add((key, i))
            return True
        return False

    def unmatched(self) -> list[Region]:
        """Regions no :meth:`overlaps` query has hit. Overlapping regions are merged first, so a region
        merged with one that matched counts as matched (this never reports a region that did match)."""
        out = []
        for region in self.regions:
            key = contig_key(region.contig)
            i = bisect.bisect_right(self._starts.get(key, []), region.start) - 1
            if (key, i) not in self._hit:
                out.append(region)
        return out

    def __len__(self) -> int:
        return len(self.regions)
