"""score-vcf, what it writes: checkpoints, and the annotated VCF and the table, streamed record by record.

Outputs are written to temp files beside their targets and renamed when complete. The VCF body is
streamed to a temp file and the header is put in front of it at the end, because htslib completes the
header (undeclared contigs and tags) only while it reads the records. The table (TSV or parquet) streams
straight to its temp file, provenance first: a ``#evo2lite_KEY=VALUE`` comment block in TSV, key-value
metadata in parquet, the same keys as the VCF's ``##evo2lite_KEY=VALUE`` lines.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ..errors import Evo2LiteError
from ..io import atomic_path
from ..log import note, warn
from ..pipelines import vcf as V

__all__ = ["TAG_SCORE", "TAG_STATUS", "TAG_SITE", "TAG_STRAND", "TABLE_COLUMNS", "Checkpoint", "PartFollower", "checkpoint_dir",
           "check_complete", "output_header", "annotate", "Outputs"]

TAG_SCORE = "EVO2_SCORE"
TAG_STATUS = "EVO2_STATUS"
TAG_SITE = "EVO2_SITE"
TAG_STRAND = "EVO2_STRAND"
TABLE_COLUMNS = ["chrom", "pos", "id", "ref", "alt", "score", "status"]
_CHECKPOINT_VERSION = 1
_PARQUET_ROWS = 1 << 16  # rows per parquet row group: what the table writer holds in memory


# ----------------------------------------------------------------------------------------------------
# Checkpoints


class Checkpoint:
    """Append-only JSON lines: a header with the run's fingerprint, one line per finished block, and a
    final ``{"done": true}``. A torn last line (killed mid-write) is dropped on reading. Blocks are read
    back one at a time by byte offset, so resuming holds no more than one block in memory."""

    def __init__(self, directory: Path, rank: int, world_size: int):
        self.directory = directory
        self.path = self.part(directory, rank, world_size)
        self._fh = None
        self._synced = 0.0

    @staticmethod
    def part(directory: Path, rank: int, world_size: int) -> Path:
        return directory / f"part-{rank}-of-{world_size}.jsonl"

    @staticmethod
    def read(path: Path) -> tuple[dict | None, dict[int, int], bool]:
        """(header or None, block number -> byte offset of its line, whether the part is done)."""
        header, offsets, done = None, {}, False
        if not path.exists():
            return header, offsets, done
        with open(path, "rb") as fh:
            offset = 0
            for line in fh:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    break
                if "fingerprint" in item:
                    header = item
                elif "block" in item:
                    offsets[item["block"]] = offset
                elif item.get("done"):
                    done = True
                offset += len(line)
        return header, offsets, done

    @staticmethod
    def load(path: Path, offset: int) -> dict[int, list]:
        """The results of the block whose line starts at ``offset``."""
        with open(path, "rb") as fh:
            fh.seek(offset)
            return {int(k): v for k, v in json.loads(fh.readline())["results"].items()}

    def start(self, fingerprint: str, keep: dict[int, int] | None = None) -> dict[int, int]:
        """(Re)write the file with the header and the blocks of ``keep`` (number -> offset in the current
        file), then append from there. Returns the kept blocks' offsets in the new file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        offsets = {}
        with open(tmp, "wb") as out, (open(self.path, "rb") if keep else contextlib.nullcontext()) as old:
            out.write((json.dumps({"fingerprint": fingerprint, "version": _CHECKPOINT_VERSION}) + "\n").encode())
            for number in sorted(keep or ()):
                old.seek(keep[number])
                offsets[number] = out.tell()
                out.write(old.readline())
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a")
        return offsets

    def append(self, number: int, results: dict[int, list]) -> None:
        self._fh.write(json.dumps({"block": number, "results": {str(k): v for k, v in results.items()}}) + "\n")
        self._fh.flush()
        # fsync at most once a second: cheap blocks (unscorable records) would otherwise wait on the disk;
        # a crash loses at most that second, and a torn line is dropped on reading
        now = time.monotonic()
        if now - self._synced >= 1.0:
            os.fsync(self._fh.fileno())
            self._synced = now

    def finish(self) -> None:
        self._fh.write(json.dumps({"done": True}) + "\n")
        self.close()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


class PartFollower:
    """Rank 0's view of another rank's checkpoint part while that rank is still writing it: `results(n)`
    of block n once its line is complete. Each poll reads only the lines appended since the last one; a
    part rewritten by its rank (starting or resuming: a new file) is followed from its start again. A
    finished part of another run is an error only after STALE_S of waiting: until then it may be a
    leftover that its rank has not rewritten yet."""

    POLL_S = 0.2
    STALE_S = 30.0

    def __init__(self, path: Path, fingerprint: str):
        self.path, self.fingerprint = path, fingerprint
        self.offsets: dict[int, int] = {}
        self.done = False
        self._file_id, self._pos, self._header_ok, self._announced = None, 0, False, False
        self._stale_since: float | None = None

    def poll(self) -> None:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        with fh:
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != self._file_id:
                self._file_id, self._pos, self._header_ok, self.offsets, self.done = \
                    (st.st_dev, st.st_ino), 0, False, {}, False
                self._stale_since = None
            fh.seek(self._pos)
            for line in fh:
                try:
                    item = json.loads(line) if line.endswith(b"\n") else None
                except json.JSONDecodeError:
                    item = None
                if item is None:
                    break  # being written
                if "fingerprint" in item:
                    self._header_ok = item["fingerprint"] == self.fingerprint
                elif "block" in item:
                    self.offsets[item["block"]] = self._pos
                elif item.get("done"):
                    self.done = True
                self._pos += len(line)
        if self.done and not self._header_ok and self._stale_since is None:
            self._stale_since = time.monotonic()

    def _sleep(self) -> None:
        if self._stale_since is not None and time.monotonic() - self._stale_since > self.STALE_S:
            raise Evo2LiteError(f"{self.path} belongs to another run; remove {self.path.parent} and rerun")
        if not self._announced:
            note(f"waiting for the other ranks ({self.path})")
            self._announced = True
        time.sleep(self.POLL_S)

    def wait_done(self) -> None:
        while True:
            self.poll()
            if self.done and self._header_ok:
                return
            self._sleep()

    def results(self, number: int, wait: bool) -> dict[int, list] | None:
        """Block `number`'s results; None when not written yet and not `wait`."""
        while True:
            if not (self._header_ok and number in self.offsets):
                self.poll()
            if self._header_ok and number in self.offsets:
                return Checkpoint.load(self.path, self.offsets[number])
            if self._header_ok and self.done:
                raise Evo2LiteError(f"{self.path} finished without block {number}; remove {self.path.parent} "
                                    "and rerun")
            if not wait:
                return None
            self._sleep()


def checkpoint_dir(out: str | None, table: str | None, fingerprint: str) -> Path | None:
    for path in (out, table):
        if path is not None and path != "-":
            return Path(path + ".evo2lite-ckpt")
    if out == "-":
        return Path.cwd() / f"evo2lite-score-vcf-{fingerprint[:16]}.evo2lite-ckpt"
    return None


def check_complete(out: str | None, fingerprint: str) -> None:
    """With --resume and every output present: fine if the VCF was made by this very run."""
    if out is None or out == "-":
        return
    from ..pipelines.fasta import open_binary

    with open_binary(out) as fh:
        for raw in fh:
            if not raw.startswith(b"##"):
                break
            if raw.startswith(b"##evo2lite_fingerprint="):
                if raw.strip().split(b"=", 1)[1].decode() == fingerprint:
                    return
                break
    raise Evo2LiteError(f"{out} exists but was made from other inputs or options; pass --force to overwrite it")


# ----------------------------------------------------------------------------------------------------
# VCF text


def _fmt_score(score) -> str:
    return "." if score is None or not math.isfinite(score) else f"{score:.6g}"


def _meta_lines(meta: dict[str, str], prefix: str) -> list[str]:
    return [f"{prefix}evo2lite_{key}={' '.join(str(value).split())}\n" for key, value in meta.items()]


def output_header(header, meta: dict[str, str], window: int, reduce: str, strand: str,
                  columns: list[str] | None = None) -> str:
    """The input's header text (as htslib completed it) with our INFO and ##evo2lite_* lines in place of
    any earlier ones. Text, not pysam's header API: htslib cannot re-add an ID it has removed."""
    columns = columns or TABLE_COLUMNS
    ours = tuple(f"##INFO=<ID={tag}," for tag in (TAG_SCORE, TAG_STATUS, TAG_SITE, TAG_STRAND)) + ("##evo2lite_",)
    lines = [line for line in str(header).splitlines(keepends=True) if not line.startswith(ours)]
    reasons = ", ".join(k for k in V.STATUS_DESCRIPTIONS if k != V.STATUS_OK)
    added = [
        f'##INFO=<ID={TAG_SCORE},Number=A,Type=Float,Description="evo2lite log-likelihood of the ALT window '
        f'minus the REF window ({window} bases centred on the variant, reduce={reduce}, strand={strand}); '
        f'missing where not scored, see {TAG_STATUS}">\n',
        f'##INFO=<ID={TAG_STATUS},Number=A,Type=String,Description="ok if scored, else why not: {reasons}">\n',
    ]
    if "site" in columns:
        added.append(f'##INFO=<ID={TAG_SITE},Number=A,Type=Float,Description="evo2lite site score of an SNV: '
                     f'log P(ALT) - log P(REF) at the variant given the bases before it (strand={strand}); '
                     'missing for other kinds and where not scored">\n')
    if "strand" in columns:
        added.append(f'##INFO=<ID={TAG_STRAND},Number=A,Type=String,Description="strand scored: - where every '
                     'overlapping transcript of the annotation is on -, else +">\n')
    added += _meta_lines(meta, "##")
    return "".join(lines[:-1] + added + lines[-1:])


def annotate(line: str, entries: list[list] | None, columns: list[str] | None = None) -> str:
    """A VCF text line with our INFO tags replacing any old ones (none for a record without ALT).
    ``entries``: [score, status, site, strand] per ALT; site and strand written when in ``columns``."""
    columns = columns or TABLE_COLUMNS
    cols = line.rstrip("\n").split("\t")
    items = [] if cols[7] == "." else [kv for kv in cols[7].split(";") if kv.split("=", 1)[0] not in
                                       (TAG_SCORE, TAG_STATUS, TAG_SITE, TAG_STRAND)]
    if entries and cols[4] != ".":
        items.append(f"{TAG_SCORE}=" + ",".join(_fmt_score(e[0]) for e in entries))
        items.append(f"{TAG_STATUS}=" + ",".join(e[1] for e in entries))
        if "site" in columns:
            items.append(f"{TAG_SITE}=" + ",".join(_fmt_score(e[2]) for e in entries))
        if "strand" in columns:
            items.append(f"{TAG_STRAND}=" + ",".join(e[3] or "." for e in entries))
    cols[7] = ";".join(items) or "."
    return "\t".join(cols) + "\n"


def _tabix(path: Path) -> bool:
    """Index a bgzipped VCF (.tbi, or .csi for contigs past 2^29); False if it cannot be (unsorted input)."""
    import pysam

    for csi in (False, True):
        try:
            pysam.tabix_index(str(path), preset="vcf", force=True, keep_original=True, csi=csi)
            return True
        except (OSError, ValueError, pysam.SamtoolsError):
            continue
    return False


# ----------------------------------------------------------------------------------------------------
# Streamed outputs


class Outputs:
    """The annotated VCF (``out``: .vcf, .vcf.gz or - for stdout) and/or the table (``table``: .tsv,
    .tsv.gz / .tsv.bgz = bgzip + tabix index, or .parquet), written record by record in input order, with
    ``columns`` (TABLE_COLUMNS, then site and/or strand). Also keeps the table as a DataFrame when
    ``keep_table`` (API use; memory then grows with the number of ALTs). Enter it in ``stack``: nothing is
    left behind unless :meth:`finish` completes."""

    def __init__(self, stack: contextlib.ExitStack, out: str | None, table: str | None, meta: dict[str, str],
                 keep_table: bool, columns: list[str] | None = None):
        self.out, self.table, self.meta = out, table, meta
        self.columns = list(columns or TABLE_COLUMNS)
        self.rows: list[tuple] | None = [] if keep_table else None
        self._stack = stack
        self._body = None
        if out is not None:
            folder = Path(out).parent if out != "-" else Path(tempfile.gettempdir())
            fd, name = tempfile.mkstemp(prefix=f".{Path(out).name}.body.", dir=folder)
            self._body_path = Path(name)
            stack.callback(self._body_path.unlink, missing_ok=True)
            self._body = stack.enter_context(open(fd, "w", encoding="utf-8", newline="\n"))
        self._table_write = None
        if table is not None:
            self._table_tmp = stack.enter_context(atomic_path(table))
            self._table_write = self._open_parquet() if table.endswith(".parquet") else self._open_tsv()

    def _open_tsv(self):
        # .gz / .bgz: BGZF (gzip-compatible, and what tabix indexes); its blocks carry no timestamp, so
        # reruns are byte-identical
        self._bgzf = self.table.endswith((".gz", ".bgz"))
        self._tsv_stack = self._stack.enter_context(contextlib.ExitStack())
        if self._bgzf:
            import pysam

            binary = self._tsv_stack.enter_context(pysam.BGZFile(str(self._table_tmp), "wb"))
        else:
            binary = self._tsv_stack.enter_context(open(self._table_tmp, "wb"))
        import io

        text = self._tsv_stack.enter_context(io.TextIOWrapper(binary, encoding="utf-8", newline="\n"))
        lines = _meta_lines(self.meta, "#")
        self._tsv_skip = len(lines) + 1  # tabix skips the provenance and the column names
        text.writelines(lines)
        writer = csv.writer(text, delimiter="\t", lineterminator="\n")
        writer.writerow(self.columns)
        fmt = lambda x: "" if x is None or math.isnan(x) else f"{x:.6g}"  # noqa: E731

        def write(row):
            writer.writerow([*row[:5], fmt(row[5]), row[6], *(fmt(x) if isinstance(x, float) else x
                                                               for x in row[7:])])

        return write

    def _open_parquet(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        extra = {"site": pa.float64(), "strand": pa.string()}
        schema = pa.schema([("chrom", pa.string()), ("pos", pa.int64()), ("id", pa.string()), ("ref", pa.string()),
                            ("alt", pa.string()), ("score", pa.float64()), ("status", pa.string())]
                           + [(c, extra[c]) for c in self.columns[len(TABLE_COLUMNS):]],
                           metadata={f"evo2lite_{k}": str(v) for k, v in self.meta.items()})
        writer = pq.ParquetWriter(str(self._table_tmp), schema)
        pending: list[tuple] = []

        def flush():
            if pending:
                writer.write_table(pa.Table.from_pylist([dict(zip(self.columns, r)) for r in pending], schema))
                pending.clear()

        def write(row):
            pending.append(row)
            if len(pending) >= _PARQUET_ROWS:
                flush()

        def close():
            flush()
            writer.close()

        self._parquet_close = close
        self._stack.callback(lambda: writer.is_open and writer.close())
        return write

    def write(self, variant: V.Variant, line: str, entries: list[list]) -> None:
        """One record: its VCF line annotated with ``entries`` ([score, status, site, strand] per ALT)."""
        if self._body is not None:
            self._body.write(annotate(line, entries, self.columns))
        if self._table_write is None and self.rows is None:
            return
        extra = self.columns[len(TABLE_COLUMNS):]
        for alt, entry in zip(variant.alts or (".",), entries):
            score, status = entry[0], entry[1]
            row = (variant.chrom, variant.pos, variant.id or ".", variant.ref, alt,
                   math.nan if score is None else float(score), status)
            if "site" in extra:
                row += (math.nan if entry[2] is None else float(entry[2]),)
            if "strand" in extra:
                row += (entry[3] or ".",)
            if self._table_write is not None:
                self._table_write(row)
            if self.rows is not None:
                self.rows.append(row)

    def finish(self, header_text: str):
        """Put the header in front of the VCF body, index a .vcf.gz, move everything into place; returns
        the kept table (a DataFrame) or None."""
        if self.table is not None and self.table.endswith(".parquet"):
            self._parquet_close()
        elif self.table is not None:
            self._tsv_stack.close()
            if self._bgzf:
                self._index_table()
        if self.out is not None:
            self._body.close()
            self._finish_vcf(header_text)
        frame = None
        if self.rows is not None:
            import pandas as pd

            frame = pd.DataFrame(self.rows, columns=self.columns)
        return frame

    def _index_table(self) -> None:
        """A tabix index (.tbi; .csi past 2^29) of the bgzipped table: columns chrom and pos (1-based). It
        sits beside the temp file now and moves beside the table when that is renamed (an unsorted input
        leaves the table unindexed, with a warning, as for the VCF)."""
        import pysam

        tmp = str(self._table_tmp)
        for csi in (False, True):
            try:
                pysam.tabix_index(tmp, seq_col=0, start_col=1, end_col=1, line_skip=self._tsv_skip, meta_char="#",
                                  force=True, keep_original=True, csi=csi)
                break
            except (OSError, ValueError, pysam.SamtoolsError):
                continue
        else:
            warn(f"{self.table}: not indexed (tabix needs records sorted by position, as the input was not)")
        for suffix in (".tbi", ".csi"):
            made, final = Path(tmp + suffix), Path(self.table + suffix)
            final.unlink(missing_ok=True)
            if made.exists():
                # the index goes first; the table follows when the outer stack renames its temp file, and
                # a run that fails before that takes the index away again
                os.replace(made, final)
                self._stack.push(lambda kind, *_, path=final: kind is not None and path.unlink(missing_ok=True))

    def _finish_vcf(self, header_text: str) -> None:
        import pysam

        out = self.out
        gz = out != "-" and out.endswith((".gz", ".bgz"))
        with contextlib.ExitStack() as stack:
            if out == "-":
                sys.stdout.flush()
                sink = sys.stdout.buffer
            else:
                vcf_tmp = stack.enter_context(atomic_path(out))
                sink = stack.enter_context(pysam.BGZFile(str(vcf_tmp), "wb") if gz else open(vcf_tmp, "wb"))
            sink.write(header_text.encode())
            with open(self._body_path, "rb") as body:
                shutil.copyfileobj(body, sink, 1 << 20)
            if out == "-":
                sys.stdout.flush()
                return
            sink.close()
            indexed = gz and _tabix(vcf_tmp)
            if gz and not indexed:
                warn(f"{out}: not indexed (tabix needs records sorted by position, as the input was not)")
        # The data file is in place now; move the index beside it (a stale one goes).
        if gz:
            for suffix in (".tbi", ".csi"):
                stale = Path(out + suffix)
                stale.unlink(missing_ok=True)
                made = Path(str(vcf_tmp) + suffix)
                if made.exists():
                    os.replace(made, stale)
