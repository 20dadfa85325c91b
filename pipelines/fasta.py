"""Sequence file readers: streaming FASTA / GenBank records and a random-access reference genome.

* :func:`read_sequences` streams ``Record(name, seq, description)`` tuples, one record at a time,
  from FASTA (plain, gzip, BGZF, xz, bz2, detected by magic bytes, not by file name) or GenBank
  (through Biopython). ``seq`` is ``bytes`` with the file's case kept (soft-masking is information).
* :class:`ReferenceGenome` is random access over ``pysam.FastaFile`` (htslib faidx) for plain or
  BGZF FASTA. It builds the ``.fai``/``.gzi`` index in a temporary folder when the FASTA's folder
  is read-only, and explains how to convert a plain-gzip FASTA, which faidx cannot index.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from evo2lite.errors import InputError

__all__ = [
    "Record",
    "detect_compression",
    "detect_format",
    "open_binary",
    "read_fasta",
    "read_genbank",
    "read_sequences",
    "write_fasta",
    "to_bgzf",
    "ReferenceGenome",
    "contig_key",
]

_STRIP = b" \t\r\n\v\f"


class Record(NamedTuple):
    """One sequence: ``name`` (first word of the header / GenBank accession.version), ``seq``
    (bytes, case kept) and ``description`` (the rest of the header, or GenBank DEFINITION)."""

    name: str
    seq: bytes
    description: str = ""


def detect_compression(path: str | os.PathLike) -> str:
    """``"bgzf"``, ``"gzip"``, ``"xz"``, ``"bz2"`` or ``"plain"``, from the file's first bytes.

    BGZF is gzip with an extra field ``BC`` (SAM spec section 4.1); every BGZF file is also a valid
    multi-member gzip file, so streaming readers treat both alike, but only BGZF is indexable.
    """
    with open(path, "rb") as fh:
        magic = fh.read(18)
    if magic[:2] == b"\x1f\x8b":
        if len(magic) >= 14 and magic[3] & 0x04 and magic[12:14] == b"BC":
            return "bgzf"
        return "gzip"
    if magic[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if magic[:3] == b"BZh":
        return "bz2"
    return "plain"


def open_binary(path: str | os.PathLike) -> BinaryIO:
    """Open a file for reading bytes, decompressing gzip/BGZF/xz/bz2 transparently."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = detect_compression(path)
    if kind in ("gzip", "bgzf"):
        return io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20)
    if kind == "xz":
        return io.BufferedReader(lzma.open(path, "rb"), buffer_size=1 << 20)
    if kind == "bz2":
        return io.BufferedReader(bz2.open(path, "rb"), buffer_size=1 << 20)
    return open(path, "rb", buffering=1 << 20)


def detect_format(path: str | os.PathLike) -> str:
    """``"fasta"`` or ``"genbank"``, from the first non-blank line of the (decompressed) content."""
    with open_binary(path) as fh:
        try:
            for line in fh:
                line = line.strip()
                if not line or line.startswith(b";"):
                    continue
                if line.startswith(b">"):
                    return "fasta"
                if line.startswith(b"LOCUS"):
                    return "genbank"
                break
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(f"{path}: cannot decompress ({exc}); is the file truncated?") from exc
    raise InputError(
        f"{path}: not a FASTA or GenBank file (FASTA starts with '>', GenBank with 'LOCUS'); "
        "pass a nucleotide FASTA/GenBank, optionally gzip/BGZF/xz-compressed"
    )


def read_fasta(path: str | os.PathLike) -> Iterator[Record]:
    """Stream the records of a FASTA file (any compression), one at a time, case kept.

    Blank lines and whitespace inside sequence lines are dropped; ``;`` comment lines before the
    first record are skipped. A record may be empty (``seq == b""``).
    """
    with open_binary(path) as fh:
        name, desc, chunks = None, "", []
        try:
            for line in fh:
                if line.startswith(b">"):
                    if name is not None:
                        yield Record(name, b"".join(chunks), desc)
                    header = line[1:].strip().decode("utf-8", errors="replace")
                    parts = header.split(None, 1)
                    if not parts:
                        raise InputError(f"{path}: a FASTA header line ('>') has no name; give each record a name")
                    name, desc = parts[0], (parts[1] if len(parts) > 1 else "")
                    chunks = []
                elif name is None:
                    if line.strip() and not line.startswith(b";"):
                        raise InputError(f"{path}: not FASTA: the first non-blank line must start with '>'")
                else:
                    chunks.append(line.translate(None, _STRIP))
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise InputError(f"{path}: cannot decompress ({exc}); is the file truncated?") from exc
        if name is not None:
            yield Record(name, b"".join(chunks), desc)


def read_genbank(path: str | os.PathLike) -> Iterator[Record]:
    """Stream the records of a GenBank flat file (any compression) through Biopython.

    The name is ``ACCESSION.VERSION`` (Biopython's ``record.id``), the description is DEFINITION.
    """
    from Bio import SeqIO
    from Bio.Seq import UndefinedSequenceError

    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", errors="replace") as text:
        try:
            for rec in SeqIO.parse(text, "genbank"):
                try:
                    seq = bytes(rec.seq)
                except UndefinedSequenceError as exc:
                    raise InputError(
                        f"{path}: GenBank record {rec.id} has no sequence (a CONTIG/WGS master record?); "
                        "download the full record with its ORIGIN section"
                    ) from exc
                yield Record(rec.id, seq, rec.description)
        except ValueError as exc:
            raise InputError(f"{path}: malformed GenBank file: {exc}") from exc


def read_sequences(path: str | os.PathLike, format: str = "auto") -> Iterator[Record]:
    """Stream records from FASTA or GenBank; ``format`` is ``"auto"``, ``"fasta"`` or ``"genbank"``."""
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "fasta":
        return read_fasta(path)
    if fmt in ("genbank", "gb", "gbk"):
        return read_genbank(path)
    raise InputError(f"unknown sequence format {format!r}; use 'auto', 'fasta' or 'genbank'")


def write_fasta(records, path: str | os.PathLike, *, line_width: int = 60) -> None:
    """Write ``(name, seq[, description])`` records as plain FASTA (``seq`` as str or bytes)."""
    with open(path, "wb") as out:
        for rec in records:
            name, seq = rec[0], rec[1]
            desc = rec[2] if len(rec) > 2 and rec[2] else ""
            seq = seq.encode("ascii") if isinstance(seq, str) else bytes(seq)
            out.write(f">{name}{' ' + desc if desc else ''}\n".encode())
            for i in range(0, len(seq), line_width):
                out.write(seq[i : i + line_width] + b"\n")


def to_bgzf(src: str | os.PathLike, dst: str | os.PathLike, *, index: bool = True) -> Path:
    """Recompress any FASTA (plain, gzip, xz, ...) as BGZF at ``dst``; with ``index`` also write the
    ``.fai`` and ``.gzi`` beside it. This is the fix for "plain gzip cannot be indexed"."""
    import pysam

    dst = Path(dst)
    with open_binary(src) as fin, pysam.BGZFile(str(dst), "wb") as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)
    if index:
        pysam.faidx(str(dst))
    return dst


def contig_key(name: str) -> str:
    """A name under which aliases meet: ``chr1``/``1`` -> ``1``, ``chrM``/``M``/``MT`` -> ``MT``."""
    base = name[3:] if name.startswith("chr") else name
    return "MT" if base in ("M", "MT") else base


def _can_write(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


class ReferenceGenome:
    """Random access to a plain or BGZF FASTA: ``ReferenceGenome(path)``.

    ``contigs`` maps name -> length in file order; ``fetch(contig, start, end)`` returns the bases
    of ``[start, end)`` (0-based half-open) as ``str`` with the file's case kept. Use it as a context
    manager or call ``close()``.
    """

    def __init__(self, path: str | os.PathLike):
        import pysam

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: reference FASTA not found")
        kind = detect_compression(self.path)
        if kind != "plain" and kind != "bgzf":
            raise InputError(
                f"{self.path} is {kind}-compressed, which cannot be indexed for random access; "
                f"recompress it with BGZF: `zcat {self.path} | bgzip > ref.fa.gz && samtools faidx ref.fa.gz` "
                "(or in Python: evo2lite.pipelines.fasta.to_bgzf(src, dst)), or decompress it to plain FASTA"
            )
        if detect_format(self.path) != "fasta":
            raise InputError(f"{self.path}: a reference must be FASTA (GenBank has no index); convert it first")
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        fai = Path(str(self.path) + ".fai")
        gzi = Path(str(self.path) + ".gzi")
        need = not fai.is_file() or (kind == "bgzf" and not gzi.is_file())
        try:
            if need and not _can_write(self.path.parent):
                self._fasta = self._open_with_temp_index(pysam, kind)
            else:
                try:
                    self._fasta = pysam.FastaFile(str(self.path))
                except OSError:
                    if not need:
                        raise
                    # Writing the index beside the FASTA failed (read-only mount): index elsewhere.
                    self._fasta = self._open_with_temp_index(pysam, kind)
        except (OSError, ValueError, pysam.SamtoolsError) as exc:
            raise InputError(
                f"{self.path}: cannot open as an indexed FASTA ({exc}); check that it is a nucleotide FASTA "
                "with equal-length lines within each record, and that any .fai/.gzi beside it belong to it"
            ) from exc
        self.contigs: dict[str, int] = dict(zip(self._fasta.references, self._fasta.lengths))

    def _open_with_temp_index(self, pysam, kind: str):
        self._tmpdir = tempfile.TemporaryDirectory(prefix="evo2lite-fai-")
        fai = os.path.join(self._tmpdir.name, self.path.name + ".fai")
        args = [str(self.path), "--fai-idx", fai]
        gzi = None
        if kind == "bgzf":
            gzi = os.path.join(self._tmpdir.name, self.path.name + ".gzi")
            args += ["--gzi-idx", gzi]
        pysam.faidx(*args)
        return pysam.FastaFile(str(self.path), filepath_index=fai, filepath_index_compressed=gzi)

    def resolve(self, contig: str) -> str:
        """The contig's name in this file, accepting ``chr20`` for ``20`` and vice versa (also
        ``chrM``/``M``/``MT``) when exactly one contig of the file answers to it; raises InputError when
        there is no such contig or the alias is ambiguous."""
        if contig in self.contigs:
            return contig
        key = contig_key(contig)
        matches = [name for name in self.contigs if contig_key(name) == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise InputError(f"contig {contig!r} is ambiguous in {self.path}: it could be any of "
                             f"{', '.join(matches)}; rename the contigs of the VCF or the reference")
        shown = ", ".join(list(self.contigs)[:8]) + (", ..." if len(self.contigs) > 8 else "")
        raise InputError(f"contig {contig!r} is not in {self.path} (it has: {shown}); check the reference build")

    def fetch(self, contig: str, start: int, end: int) -> str:
        """Bases ``[start, end)`` of ``contig`` (0-based half-open), case as in the file."""
        if contig not in self.contigs:
            self.resolve(contig)  # raises with the list of contigs, or names the alias to use
            raise InputError(f"contig {contig!r} is not in {self.path}; it is named {self.resolve(contig)!r} there")
        length = self.contigs[contig]
        if not (0 <= start <= end <= length):
            raise InputError(
                f"interval {contig}:{start}-{end} is outside the contig (length {length}); "
                "coordinates are 0-based half-open"
            )
        if start == end:
            return ""
        return self._fasta.fetch(reference=contig, start=start, end=end)

    def close(self) -> None:
        if getattr(self, "_fasta", None) is not None:
            self._fasta.close()
            self._fasta = None
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def __enter__(self) -> ReferenceGenome:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort; a TemporaryDirectory cleans itself up too
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"ReferenceGenome({str(self.path)!r}, contigs={len(self.contigs)})"
