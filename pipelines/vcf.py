"""VCF/BCF input for variant scoring: records, allele classes and REF/ALT windows.

* :func:`to_zero_based` is the one place where a 1-based position (VCF ``POS``, the start of a
  ``chr:start-end`` region, used by pipelines.regions) becomes a 0-based start. Everything after it is 0-based half-open.
* :class:`VcfInput` reads VCF, VCF.gz (BGZF), BCF or ``-`` (stdin) through pysam/htslib. Stdin and
  plain-gzip files (which htslib cannot open: it wants BGZF) are spooled to a temporary file first, so
  every input can be read several times. Unreadable files raise :class:`InputError` naming the file
  and line; htslib's own chatter is silenced while reading.
* :func:`classify_allele`, :func:`check_ref` and :func:`window_status` give the reason code of an
  allele that cannot be scored (``STATUS_*`` below, documented in docs/score-vcf.md); a record is never
  dropped for them.
* Regions (``--regions``, BED) live in :mod:`evo2lite.pipelines.regions`.
* :func:`site_context` and :func:`allele_windows` build equal-length REF and ALT windows around a
  variant (see there for indels and contig ends).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evo2lite.errors import InputError
from evo2lite.pipelines.fasta import contig_key, detect_compression, open_binary

__all__ = [
    "STATUS_OK", "STATUS_SYMBOLIC", "STATUS_BREAKEND", "STATUS_STAR", "STATUS_MISSING_ALT",
    "STATUS_INVALID_ALLELE", "STATUS_IUPAC", "STATUS_CONTIG_ABSENT", "STATUS_OUT_OF_RANGE",
    "STATUS_REF_MISMATCH", "STATUS_N_ALLELE", "STATUS_N_AT_VARIANT", "STATUS_N_RICH", "STATUS_N_INSIDE",
    "STATUS_IUPAC_IN_WINDOW", "STATUS_DESCRIPTIONS",
    "to_zero_based", "Variant", "variant_from_record", "VcfInput", "read_variants",
    "MAX_N_SHARE", "contig_key",
    "classify_allele", "check_ref", "window_status", "SiteContext", "site_context", "allele_windows",
    "header_contig_lengths", "quiet_htslib",
]

# Reason codes: "ok" means scored; anything else says why an ALT was kept but not scored.
STATUS_OK = "ok"
STATUS_SYMBOLIC = "symbolic"
STATUS_BREAKEND = "breakend"
STATUS_STAR = "star"
STATUS_MISSING_ALT = "missing_alt"
STATUS_INVALID_ALLELE = "invalid_allele"
STATUS_IUPAC = "iupac"
STATUS_CONTIG_ABSENT = "contig_absent"
STATUS_OUT_OF_RANGE = "out_of_range"
STATUS_REF_MISMATCH = "ref_mismatch"
STATUS_N_ALLELE = "n_allele"
STATUS_N_AT_VARIANT = "n_at_variant"
STATUS_N_RICH = "n_rich"
STATUS_N_INSIDE = "n_inside"
STATUS_IUPAC_IN_WINDOW = "iupac_in_window"

# A window with more than this share of N is not scored (see docs/score-vcf.md for the choice).
MAX_N_SHARE = 0.10

STATUS_DESCRIPTIONS: dict[str, str] = {
    STATUS_OK: "scored",
    STATUS_SYMBOLIC: "symbolic allele such as <DEL>, <*> or <NON_REF>",
    STATUS_BREAKEND: "breakend (ALT with [ or ], or a single breakend .A / A.)",
    STATUS_STAR: "the * allele (overlapping deletion)",
    STATUS_MISSING_ALT: "ALT is missing (.)",
    STATUS_INVALID_ALLELE: "REF or ALT has characters that are not bases",
    STATUS_IUPAC: "REF or ALT has IUPAC ambiguity codes (R, Y, ...)",
    STATUS_N_ALLELE: "ALT has N (an unknown base)",
    STATUS_CONTIG_ABSENT: "the contig is not in the reference (also after chr/MT aliasing)",
    STATUS_OUT_OF_RANGE: "REF lies (partly) outside the contig",
    STATUS_REF_MISMATCH: "REF does not match the reference (like bcftools norm --check-ref)",
    STATUS_N_AT_VARIANT: "the reference has N under REF (the variant replaces unknown bases)",
    STATUS_N_RICH: f"more than {MAX_N_SHARE:.0%} of the REF or ALT window is N",
    STATUS_N_INSIDE: "N between bases inside the REF or ALT window (not a run at an end of the window)",
    STATUS_IUPAC_IN_WINDOW: "the REF or ALT window has an IUPAC code (R, Y, ...) or another non-ACGTN byte",
}

_ACGT = frozenset("ACGT")
_BASES = frozenset("ACGTN")
_IUPAC = frozenset("RYSWKMBDHVU")


def to_zero_based(pos: int) -> int:
    """The 0-based start of a 1-based position (VCF ``POS``, region start). The only such conversion."""
    return int(pos) - 1


# ----------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class Variant:
    """One VCF record. ``start`` is 0-based; ``pos`` is the VCF ``POS`` exactly as written, kept only to
    report it back. ``alts`` is ``()`` when ALT is ``.``; ``index`` counts records from 0 in file order."""

    index: int
    chrom: str
    pos: int
    start: int
    id: str | None
    ref: str
    alts: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.start + len(self.ref)


def variant_from_record(rec, index: int) -> Variant:
    """A :class:`Variant` from a ``pysam.VariantRecord``; never raises on odd content (an unreadable field
    becomes empty and the allele checks then mark it)."""
    try:  # the common case in one go; field by field only when htslib refuses one
        pos, alleles, chrom, rid = rec.pos, rec.alleles, rec.chrom, rec.id
        if alleles:
            alts = tuple(a for a in alleles[1:] if a is not None)
            return Variant(index=index, chrom=str(chrom), pos=int(pos), start=to_zero_based(pos), id=rid,
                           ref=str(alleles[0]), alts=() if alts == (".",) else alts)
    except Exception:  # noqa: BLE001 - htslib may refuse one field of a malformed record
        pass

    def field(get, default):
        try:
            value = get()
        except Exception:  # htslib may refuse one field of a malformed record; the others still count
            return default
        return default if value is None else value

    pos = int(field(lambda: rec.pos, 0))
    alleles = field(lambda: rec.alleles, ())
    ref = field(lambda: rec.ref, alleles[0] if alleles else "")
    alts = tuple(a for a in alleles[1:] if a is not None) if alleles else ()
    if alts == (".",):
        alts = ()
    return Variant(index=index, chrom=str(field(lambda: rec.chrom, "")), pos=pos, start=to_zero_based(pos),
                   id=field(lambda: rec.id, None), ref=str(ref), alts=alts)


def _header_problem(path: Path) -> tuple[int, str]:
    """(line, what is wrong) for a VCF header htslib refused; a best guess from the text."""
    try:
        with open_binary(path) as fh:
            first = True
            for number, raw in enumerate(fh, start=1):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if first:
                    first = False
                    if not line.startswith("##fileformat=VCFv"):
                        return number, "the first line must be ##fileformat=VCFv4.x"
                    continue
                if line.startswith("##"):
                    continue
                if line.startswith("#CHROM"):
                    cols = line[1:].split("\t")
                    fixed = ["CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"]
                    if cols[:8] != fixed:
                        return number, "the #CHROM line must name the columns " + " ".join(fixed) + " (tab-separated)"
                    if len(cols) > 8 and cols[8] != "FORMAT":
                        return number, "the 9th column of the #CHROM line must be FORMAT"
                    if len(cols) == 9:
                        return number, "the #CHROM line has FORMAT but no sample columns"
                    if len(set(cols[9:])) != len(cols[9:]):
                        return number, "sample names in the #CHROM line are not unique"
                    return number, "the header is malformed"
                return number, "a header line must start with ## (a meta line broken over two lines?)"
            return (1, "the file is empty") if first else (number, "there is no #CHROM header line")
    except (OSError, EOFError) as exc:
        return 1, f"cannot read it ({exc})"


def _record_line(path: Path, record_number: int) -> int | None:
    """The 1-based text line of the ``record_number``-th (0-based) record of a text VCF."""
    try:
        with open_binary(path) as fh:
            seen = -1
            number = 0
            for number, raw in enumerate(fh, start=1):
                if raw.startswith(b"#") or not raw.strip():
                    continue
                seen += 1
                if seen == record_number:
                    return number
            return number + 1
    except (OSError, EOFError):
        return None


class VcfInput:
    """A VCF/BCF input that can be read several times: ``VcfInput(path)`` with ``path`` a file or ``-``.

    ``open()`` returns a fresh ``pysam.VariantFile``; ``records(vf)`` iterates it, turning htslib
    failures into :class:`InputError` with the file and line. Use as a context manager (or call
    ``close()``) to remove the spooled copy of stdin / plain-gzip input.
    """

    def __init__(self, path: str | os.PathLike, *, stdin=None):
        self.name = "<stdin>" if str(path) == "-" else str(path)
        self._tmpdir: str | None = None
        if str(path) == "-":
            source = stdin if stdin is not None else sys.stdin.buffer
            self.path = self._spool_to(lambda out: shutil.copyfileobj(source, out, 1 << 20), "stdin.vcf")
        else:
            self.path = Path(path)
            if not self.path.is_file():
                raise InputError(f"{self.name}: no such file")
        kind = detect_compression(self.path)
        if kind == "gzip":
            # htslib reads BGZF, not plain gzip; streaming it through Python's gzip costs one temp copy.
            from evo2lite.log import note

            note(f"{self.name} is plain gzip, not BGZF: decompressing it to a temporary file; "
                 f"`zcat {self.name} | bgzip > in.vcf.gz` avoids this")
            src = self.path

            def decompress(out):
                with gzip.open(src, "rb") as fin:
                    shutil.copyfileobj(fin, out, 1 << 20)

            try:
                self.path = self._spool_to(decompress, "plain.vcf")
            except (OSError, EOFError) as exc:
                self.close()
                raise InputError(f"{self.name}: cannot decompress ({exc}); is the file truncated? "
                                 f"Check it with `gzip -t {self.name}`") from exc
        elif kind in ("xz", "bz2"):
            self.close()
            raise InputError(f"{self.name}: {kind}-compressed VCF is not supported; "
                             f"recompress it with bgzip: `{kind}cat {self.name} | bgzip > in.vcf.gz`")
        self.is_bcf = False

    def _spool_to(self, fill: Callable, name: str) -> Path:
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="evo2lite-vcf-")
        target = Path(self._tmpdir) / name
        with open(target, "wb") as out:
            fill(out)
        return target

    def sha256(self) -> str:
        """Digest of the bytes htslib reads (the spooled copy for stdin / plain gzip)."""
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()

    def open(self):
        """A fresh ``pysam.VariantFile`` over the input."""
        import pysam

        with quiet_htslib():
            try:
                vf = pysam.VariantFile(str(self.path), "r")
            except (ValueError, OSError) as exc:
                line, why = _header_problem(self.path)
                raise InputError(f"{self.name}: line {line}: not a readable VCF/BCF: {why} ({_short(exc)})") from exc
        self.is_bcf = vf.format == "BCF"
        return vf

    def records(self, vf) -> Iterator[tuple[int, object]]:
        """``(index, pysam.VariantRecord)`` in file order."""
        index = 0
        iterator = iter(vf)
        with quiet_htslib():  # once, not per record: it costs a call into htslib each time
            while True:
                try:
                    rec = next(iterator)
                except StopIteration:
                    return
                except (ValueError, OSError) as exc:
                    where = f"record {index + 1}" if self.is_bcf else f"line {_record_line(self.path, index) or '?'}"
                    raise InputError(f"{self.name}: {where}: cannot parse the record ({_short(exc)}); "
                                     "fix or drop it (bcftools view shows htslib's complaint)") from exc
                yield index, rec
                index += 1

    def fetch(self, vf, regions, matched: set[int] | None = None) -> Iterator[tuple[int, object]]:
        """``(index, record)`` of the records overlapping ``regions`` (objects with ``contig``, ``start``,
        ``end``; 0-based; contig names match through :func:`contig_key`) through the tabix/CSI index of
        ``vf`` (``vf.index`` must be set). Regions are taken in the index's contig order, then by start,
        so a sorted file comes out in input order; a record overlapping several regions comes once.
        ``matched`` collects the positions (in ``regions``) of the regions that matched a record."""
        by_key: dict[str, str] = {}
        for name in vf.index.keys():
            by_key.setdefault(contig_key(str(name)), str(name))
        order = {name: i for i, name in enumerate(by_key.values())}
        todo = sorted((order[by_key[contig_key(r.contig)]], r.start, k) for k, r in enumerate(regions)
                      if contig_key(r.contig) in by_key)
        index, previous_contig, done_to = 0, None, -1
        for _, _, k in todo:
            region = regions[k]
            contig = by_key[contig_key(region.contig)]
            if contig != previous_contig:
                previous_contig, done_to = contig, -1
            iterator = vf.fetch(contig, region.start, region.end)
            while True:
                with quiet_htslib():
                    try:
                        rec = next(iterator)
                    except StopIteration:
                        break
                    except (ValueError, OSError) as exc:
                        raise InputError(f"{self.name}: near {contig}:{region.start + 1}: cannot parse a "
                                         f"record ({_short(exc)})") from exc
                if matched is not None:
                    matched.add(k)
                # fetched before: it started before the end of a region already done (and overlaps this one)
                if rec.start < done_to:
                    continue
                yield index, rec
                index += 1
            done_to = max(done_to, region.end if region.end is not None else sys.maxsize)

    def close(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> VcfInput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


@contextlib.contextmanager
def quiet_htslib():
    """Silence htslib's own warnings/errors on stderr while in the block (we report problems as one line)."""
    import pysam

    previous = pysam.set_verbosity(0)
    try:
        yield
    finally:
        pysam.set_verbosity(previous)


def read_variants(path: str | os.PathLike, regions=None) -> Iterator[Variant]:
    """Stream :class:`Variant` records of a VCF/BCF (``-`` for stdin), optionally only those overlapping
    ``regions`` (a :class:`evo2lite.pipelines.regions.RegionSet`)."""
    with VcfInput(path) as source:
        vf = source.open()
        try:
            for index, rec in source.records(vf):
                variant = variant_from_record(rec, index)
                if regions is None or regions.overlaps(variant.chrom, variant.start, variant.end):
                    yield variant
        finally:
            vf.close()


def header_contig_lengths(header) -> dict[str, int]:
    """``##contig`` lengths declared in a pysam header (contigs without a length are left out)."""
    out = {}
    for name, contig in header.contigs.items():
        if contig.length is not None:
            out[str(name)] = int(contig.length)
    return out


# ----------------------------------------------------------------------------------------------------
# Alleles and windows


def classify_allele(allele: str | None) -> str:
    """The status of one allele from its text alone: ``STATUS_OK`` if it is plain bases ACGT (any case),
    ``STATUS_N_ALLELE`` if it also has N (a REF with N still matches the reference, see :func:`check_ref`)."""
    if allele is None or allele in ("", "."):
        return STATUS_MISSING_ALT
    if allele == "*":
        return STATUS_STAR
    if allele.startswith("<") and allele.endswith(">"):
        return STATUS_SYMBOLIC
    if "[" in allele or "]" in allele or (len(allele) > 1 and (allele[0] == "." or allele[-1] == ".")):
        return STATUS_BREAKEND
    letters = set(allele.upper())
    if letters <= _ACGT:
        return STATUS_OK
    if letters <= _BASES:
        return STATUS_N_ALLELE
    if letters <= _BASES | _IUPAC:
        return STATUS_IUPAC
    return STATUS_INVALID_ALLELE


def check_ref(ref: str, reference_bases: str) -> bool:
    """Whether a VCF REF matches the reference bases under it (case-insensitive; an N in REF matches
    any base, as bcftools does)."""
    if len(ref) != len(reference_bases):
        return False
    return all(a == b or a == "N" for a, b in zip(ref.upper(), reference_bases.upper()))


def window_status(*windows: str, max_n_share: float = MAX_N_SHARE) -> str:
    """``STATUS_IUPAC_IN_WINDOW`` if a window (upper case) has a byte other than ACGTN; else
    ``STATUS_N_RICH`` if more than ``max_n_share`` of a window is N (or it is empty); else
    ``STATUS_N_INSIDE`` if an N sits between bases (only runs at the window's ends, where the window
    reaches into a gap, are scored: benchmarks/score_vcf_n_share.py measures why); else ``STATUS_OK``."""
    for window in windows:
        if window.strip("ACGTN"):  # fast path: most windows are ACGT throughout
            if not set(window) <= _BASES:
                return STATUS_IUPAC_IN_WINDOW
    for window in windows:
        if not window or window.count("N") > max_n_share * len(window):
            return STATUS_N_RICH
    for window in windows:
        if "N" in window.strip("N"):
            return STATUS_N_INSIDE
    return STATUS_OK


@dataclass(frozen=True, slots=True)
class SiteContext:
    """Reference around one variant start: ``seq`` = reference[``win_start``:...], long enough to refill
    the ALT window after the longest deletion; the REF window is ``seq[:ref_len]``."""

    start: int      # the variant's 0-based start
    win_start: int  # 0-based start of the REF window in the contig
    ref_len: int    # length of the REF window (shorter than the window only at contig ends)
    seq: str        # reference bases from win_start, upper-cased

    @property
    def ref_window(self) -> str:
        return self.seq[: self.ref_len]


def site_context(fetch: Callable[[int, int], str], contig_len: int, start: int, window: int,
                 max_ref_len: int) -> SiteContext:
    """The reference around a variant starting at ``start`` (0-based) for windows of ``window`` bases.

    As in Evo 2's own scoring, the window is centred on the variant: its first base sits at index
    ``window // 2``; near the contig ends the window is clipped (shorter), never shifted.
    ``fetch(start, end)`` returns the contig's bases ``[start, end)``.
    """
    first = start - window // 2
    win_start, win_end = max(0, first), min(contig_len, first + window)
    seq_end = min(contig_len, win_end + max(0, max_ref_len))
    return SiteContext(start=start, win_start=win_start, ref_len=max(0, win_end - win_start),
                       seq=fetch(win_start, seq_end).upper())


def allele_windows(ctx: SiteContext, ref: str, alt: str) -> tuple[str, str]:
    """Equal-length (REF window, ALT window) for replacing ``ref`` by ``alt`` at ``ctx.start``.

    The left edge and the bases before the variant are the same in both; for an indel the ALT window
    keeps the REF window's length by moving its far (right) edge: a deletion pulls in more reference
    bases on the right, an insertion pushes them out (as Evo 2's authors do, evo2#206). Where a deletion
    near the contig end has no bases left to pull in, both windows are cut to the ALT's length.
    """
    offset = ctx.start - ctx.win_start
    alt_full = ctx.seq[:offset] + alt.upper() + ctx.seq[offset + len(ref):]
    length = min(ctx.ref_len, len(alt_full))
    return ctx.seq[:length], alt_full[:length]
