"""Transcript strands from an annotation (BED with a strand column, or GTF/GFF transcript/mRNA lines), for
scoring a variant on the strand of the transcript it lies in (score-vcf and mutagenize ``--strand
transcript``). A span is scored on "-" when at least one transcript overlaps it and every one that does is
on "-"; otherwise (none, "+" only, or both strands) on "+".

Features are kept per contig in bins of ``_BIN`` bases, so a lookup reads only the features near it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import Evo2LiteError

__all__ = ["TranscriptStrands"]

_BIN = 1 << 16
_GTF_SUFFIXES = (".gtf", ".gtf.gz", ".gff", ".gff3", ".gff.gz", ".gff3.gz")


class TranscriptStrands:
    """The transcripts of ``path`` on the contigs ``resolve`` knows (contig aliases resolved; lines on other
    contigs are skipped). Bad lines are one-line errors naming ``file:line``."""

    def __init__(self, path, resolve):
        from ..pipelines.fasta import open_binary

        self.path = Path(str(path))
        self._bins: dict[str, dict[int, list[tuple[int, int, bool]]]] = {}
        names: dict[str, str | None] = {}
        gtf = str(path).lower().endswith(_GTF_SUFFIXES)
        try:
            with open_binary(path) as fh:
                for number, raw in enumerate(fh, 1):
                    cols = raw.decode("utf-8", "replace").rstrip("\r\n").split("\t")
                    if not cols[0] or cols[0].startswith(("#", "track", "browser")):
                        continue
                    if gtf:
                        if len(cols) < 9 or cols[2] not in ("transcript", "mRNA"):
                            continue
                        start, end, sign = int(cols[3]) - 1, int(cols[4]), cols[6]
                    elif len(cols) < 6:
                        raise Evo2LiteError(f"--annotation {path}:{number}: a BED line without a strand (column 6)")
                    else:
                        start, end, sign = int(cols[1]), int(cols[2]), cols[5]
                    if sign not in ("+", "-", "."):
                        raise Evo2LiteError(f"--annotation {path}:{number}: strand {sign!r} is not +, - or .")
                    if cols[0] not in names:
                        try:
                            names[cols[0]] = resolve(cols[0])
                        except Evo2LiteError:
                            names[cols[0]] = None
                    contig = names[cols[0]]
                    if contig is None or end <= start:
                        continue
                    bins = self._bins.setdefault(contig, {})
                    for b in range(start // _BIN, (end - 1) // _BIN + 1):
                        bins.setdefault(b, []).append((start, end, sign == "-"))
        except (OSError, ValueError, UnicodeError) as exc:
            raise Evo2LiteError(f"--annotation {path}: cannot read it ({exc})") from None

    def _overlapping(self, contig: str, start: int, end: int):
        bins = self._bins.get(contig, {})
        for b in range(start // _BIN, (max(end, start + 1) - 1) // _BIN + 1):
            for a, e, minus in bins.get(b, ()):
                if a < end and start < e:
                    yield a, e, minus

    def strand(self, contig: str, start: int, end: int) -> str:
        """"-" or "+" for the 0-based half-open span (an empty span, e.g. an insertion, looks at start)."""
        signs = {minus for _, _, minus in self._overlapping(contig, start, max(end, start + 1))}
        return "-" if signs == {True} else "+"

    def per_position(self, contig: str, start: int, end: int) -> list[str]:
        """The strand of every position of [start, end)."""
        n = end - start
        plus, minus = np.zeros(n, bool), np.zeros(n, bool)
        for a, e, is_minus in self._overlapping(contig, start, end):
            (minus if is_minus else plus)[max(a, start) - start: min(e, end) - start] = True
        return ["-" if m and not p else "+" for p, m in zip(plus, minus)]
