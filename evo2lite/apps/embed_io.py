"""Inputs and outputs of `evo2lite embed`: FASTA records or reference regions in; HDF5, npz or Parquet out.

Region strings are samtools-style and 1-based inclusive (`chr1:1,001-2,000` is bases [1000, 2000) inside);
BED is 0-based half-open as always. Outputs are written to a temporary file and renamed when complete.

HDF5 (.h5/.hdf5): one group per record, named by the record ID made safe (characters other than
[A-Za-z0-9_.-] become '_', duplicates get a suffix), holding one dataset per layer (chunked, compressed);
the group keeps the original `id`, `contig`, `start`, `end`, `length`, `index`; the file's attributes hold
the model and run metadata (`metadata`, JSON). npz: arrays named `<safe id>/<layer>` plus `__metadata__`
(JSON: run metadata and one entry per record). Parquet: pooled vectors only, one row per record (or per
window with a stride), one fixed-size-list column per layer, metadata in the schema under `evo2lite`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from .embed import Embedding, SeqInput

__all__ = ["OUTPUT_FORMATS", "embed_file", "output_format", "parse_region", "read_bed", "read_inputs", "open_writer",
           "safe_name"]

OUTPUT_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = ("gzip", "lzf", "none")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_REGION = re.compile(r"^(?P<contig>.+?):(?P<start>[\d,]+)(?:-(?P<end>[\d,]+))?$")


def output_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(f"cannot tell the output format of {path}: use a name ending in "
                         f"{', '.join(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[suffix]


def safe_name(name: str) -> str:
    """A record ID as an HDF5/npz member name: only [A-Za-z0-9_.-], never empty, '.' or '..'."""
    text = _UNSAFE.sub("_", name) or "_"
    return "_" + text if text in (".", "..") else text


# --- inputs ------------------------------------------------------------------------------------------

def parse_region(text: str, contigs: dict[str, int], resolve=None) -> tuple[str, int, int, str]:
    """(contig, start, end, label) from `chr:start-end` (1-based inclusive), `chr:start` (to the end of
    the contig) or a bare contig name; start/end are returned 0-based half-open. Raises InputError when
    the region is malformed, names an unknown contig or lies outside it."""
    text = text.strip()
    if resolve is None:
        def resolve(c):
            if c not in contigs:
                raise InputError(f"contig {c!r} is not in the reference")
            return c
    if text in contigs:
        return text, 0, contigs[text], text
    match = _REGION.match(text)
    if match is None:
        contig = resolve(text)  # a bare contig name, maybe an alias (chr20 vs 20)
        return contig, 0, contigs[contig], text
    contig = resolve(match["contig"])
    length = contigs[contig]
    start1 = int(match["start"].replace(",", ""))
    end1 = int(match["end"].replace(",", "")) if match["end"] else length
    if start1 < 1 or end1 < start1:
        raise InputError(f"region {text!r}: positions are 1-based inclusive and need 1 <= start <= end")
    if end1 > length:
        raise InputError(f"region {text!r} is outside contig {contig} (length {length:,})")
    return contig, start1 - 1, end1, f"{contig}:{start1}-{end1}"


def read_bed(path: str | os.PathLike) -> Iterator[tuple[str, int, int, str | None]]:
    """(contig, start, end, name or None) of each BED line (0-based half-open); header, `track`,
    `browser` and `#` lines are skipped."""
    from ..pipelines.fasta import open_binary

    with open_binary(path) as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            try:
                contig, start, end = fields[0], int(fields[1]), int(fields[2])
            except (IndexError, ValueError):
                raise InputError(f"{path}:{number}: not a BED line (need contig, start, end): {line[:60]!r}") from None
            if not 0 <= start <= end:
                raise InputError(f"{path}:{number}: BED interval {contig}:{start}-{end} needs 0 <= start <= end")
            name = fields[3] if len(fields) > 3 and fields[3] not in ("", ".") else None
            yield contig, start, end, name


def _spool_stdin() -> Path:
    tmp = tempfile.NamedTemporaryFile(prefix="evo2lite-stdin-", suffix=".fa", delete=False)
    with tmp:
        shutil.copyfileobj(sys.stdin.buffer, tmp, length=1 << 20)
    return Path(tmp.name)


def plan_regions(reference, regions: list[str]) -> list[tuple[str, int, int, str]]:
    """Every requested interval, validated against the reference before anything runs: each item of
    `regions` is a BED file or a region string."""
    intervals = []
    for item in regions:
        if Path(item).is_file():
            for contig, start, end, name in read_bed(item):
                resolved = reference.resolve(contig)
                length = reference.contigs[resolved]
                if end > length:
                    raise InputError(f"{item}: BED interval {contig}:{start}-{end} is outside contig {resolved} "
                                     f"(length {length:,})")
                intervals.append((resolved, start, end, name or f"{contig}:{start + 1}-{end}"))
        else:
            intervals.append(parse_region(item, reference.contigs, reference.resolve))
    return intervals


def read_inputs(input: str | os.PathLike, regions: list[str] | tuple[str, ...] = ()
                ) -> tuple[Iterator[SeqInput], int | None]:
    """(records, total bases or None) from a FASTA/GenBank path or '-' (stdin), or from `regions` of a
    reference FASTA (plain or BGZF). Regions are all checked before this returns."""
    if regions:
        if str(input) == "-":
            raise InputError("--regions needs the reference FASTA as a file (plain or BGZF), not stdin")
        from ..pipelines.fasta import ReferenceGenome

        reference = ReferenceGenome(input)
        intervals = plan_regions(reference, list(regions))

        def fetch() -> Iterator[SeqInput]:
            with reference:
                for contig, start, end, label in intervals:
                    yield SeqInput(label, reference.fetch(contig, start, end), contig=contig, start=start)

        return fetch(), sum(end - start for _, start, end, _ in intervals)
    from ..pipelines.fasta import read_sequences

    spooled = _spool_stdin() if str(input) == "-" else None
    path = spooled or Path(input)

    def stream() -> Iterator[SeqInput]:
        try:
            for rec in read_sequences(path):
                yield SeqInput(rec.name, rec.seq, contig=rec.name, description=rec.description)
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)

    records = stream()
    if spooled is None:
        from ..pipelines.fasta import detect_format

        detect_format(path)  # a missing or non-sequence file fails now, before the model loads
    return records, None


# --- outputs -----------------------------------------------------------------------------------------

def _record_meta(emb: Embedding, safe: str, index: int) -> dict:
    return {"id": emb.name, "name": safe, "index": index, "contig": emb.contig or emb.name,
            "start": int(emb.start), "end": int(emb.end), "length": int(emb.length),
            "description": emb.description}


class _Writer:
    """Common bookkeeping: unique safe names per record, run metadata."""

    def __init__(self, path: Path, metadata: dict, compression: str) -> None:
        if compression not in COMPRESSIONS:
            raise InputError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
        self.path, self.metadata, self.compression = path, metadata, compression
        self.records: list[dict] = []
        self._used: set[str] = set()
        self._names: dict[int, str] = {}

    def name_for(self, key: int, record_name: str) -> str:
        """The unique safe member name of a record (`key` identifies the record while it is written)."""
        if key not in self._names:
            base = safe_name(record_name)
            name, n = base, 1
            while name in self._used:
                n += 1
                name = f"{base}__{n}"
            self._used.add(name)
            self._names[key] = name
        return self._names[key]

    def target_factory(self, index, rec, layer, shape, dtype):
        return None  # per-token arrays are built in memory and written by `write`

    def close(self) -> None: ...


class HDF5Writer(_Writer):
    def __init__(self, path: Path, metadata: dict, compression: str) -> None:
        super().__init__(path, metadata, compression)
        import h5py

        self.file = h5py.File(path, "w")
        self.file.attrs["metadata"] = json.dumps(metadata)
        for key in ("model", "dtype", "pool", "stride", "rc_average", "mode", "chunk_size", "coordinates",
                    "evo2lite_version"):
            self.file.attrs[key] = metadata[key]
        self.file.attrs["layers"] = metadata["layers"]

    def _filters(self, shape, itemsize) -> dict:
        rows = max(1, min(shape[0], (1 << 20) // max(1, shape[-1] * itemsize))) if len(shape) == 2 else None
        filters = {"chunks": (rows, shape[1]) if rows else True}
        if self.compression == "gzip":
            filters.update(compression="gzip", compression_opts=1, shuffle=True)
        elif self.compression == "lzf":
            filters.update(compression="lzf", shuffle=True)
        return filters

    def _group(self, rec_key: int, name: str):
        safe = self.name_for(rec_key, name)
        return self.file.require_group(safe)

    def target_factory(self, index, rec, layer, shape, dtype):
        """Per-token embeddings go straight into the file, chunk by chunk (bounded memory)."""
        group = self._group(index, rec.name)
        return group.create_dataset(layer, shape=shape, dtype=dtype, fillvalue=0,
                                    **self._filters(shape, np.dtype(dtype).itemsize))

    def write(self, emb: Embedding) -> None:
        group = self._group(emb.index, emb.name)
        meta = _record_meta(emb, group.name.lstrip("/"), len(self.records))
        for key in ("id", "contig", "start", "end", "length", "index", "description"):
            group.attrs[key] = meta[key]
        if emb.stride:
            group.attrs["stride"] = emb.stride
        for layer, array in emb.arrays.items():
            if layer in group:  # written in place by target_factory
                dataset = group[layer]
            else:
                array = np.asarray(array)
                dataset = group.create_dataset(layer, data=array, **self._filters(array.shape, array.itemsize))
            dataset.attrs["layer"] = layer
            dataset.attrs["kind"] = ("per_token" if dataset.ndim == 2 and not emb.stride else
                                     "per_window" if emb.stride else "pooled")
        self.records.append(meta)

    def close(self) -> None:
        self.file.attrs["num_records"] = len(self.records)
        self.file.close()


class NpzWriter(_Writer):
    def __init__(self, path: Path, metadata: dict, compression: str) -> None:
        super().__init__(path, metadata, compression)
        method = zipfile.ZIP_STORED if compression == "none" else zipfile.ZIP_DEFLATED
        self.zip = zipfile.ZipFile(path, "w", compression=method, allowZip64=True)

    def _put(self, member: str, array: np.ndarray) -> None:
        with self.zip.open(member + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)

    def write(self, emb: Embedding) -> None:
        safe = self.name_for(emb.index, emb.name)
        for layer, array in emb.arrays.items():
            self._put(f"{safe}/{layer}", array)
        meta = _record_meta(emb, safe, len(self.records))
        if emb.stride:
            meta["stride"] = emb.stride
        self.records.append(meta)

    def close(self) -> None:
        self._put("__metadata__", np.array(json.dumps({**self.metadata, "records": self.records})))
        self.zip.close()


class ParquetWriter(_Writer):
    """One row per pooled record (or per window); rows are flushed in batches."""

    def __init__(self, path: Path, metadata: dict, compression: str, d_model: int) -> None:
        super().__init__(path, metadata, compression)
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        value = pa.float16() if metadata["out_dtype"] == "float16" else pa.float32()
        fields = [pa.field("id", pa.string()), pa.field("contig", pa.string()), pa.field("start", pa.int64()),
                  pa.field("end", pa.int64()), pa.field("length", pa.int64())]
        if metadata["stride"]:
            fields += [pa.field("window", pa.int64()), pa.field("window_start", pa.int64()),
                       pa.field("window_end", pa.int64())]
        fields += [pa.field(layer, pa.list_(value, d_model)) for layer in metadata["layers"]]
        self.schema = pa.schema(fields, metadata={"evo2lite": json.dumps(metadata)})
        self.writer = pq.ParquetWriter(str(path), self.schema,
                                       compression="none" if compression == "none" else "zstd")
        self.rows: dict[str, list] = {f.name: [] for f in fields}
        self.buffered = 0

    def write(self, emb: Embedding) -> None:
        arrays = {layer: np.asarray(a) for layer, a in emb.arrays.items()}
        first = next(iter(arrays.values()))
        n = first.shape[0] if emb.stride else 1
        for i in range(n):
            self.rows["id"].append(emb.name)
            self.rows["contig"].append(emb.contig or emb.name)
            if emb.stride:
                w0 = i * emb.stride
                w1 = min(w0 + emb.stride, emb.length)
                self.rows["window"].append(i)
                self.rows["window_start"].append(emb.start + w0)
                self.rows["window_end"].append(emb.start + w1)
            self.rows["start"].append(emb.start)
            self.rows["end"].append(emb.end)
            self.rows["length"].append(emb.length)
        for layer, array in arrays.items():
            self.rows[layer].extend(array.reshape(n, -1))
        self.records.append(_record_meta(emb, emb.name, len(self.records)))
        self.buffered += n
        if self.buffered >= 4096:
            self._flush()

    def _flush(self) -> None:
        if not self.buffered:
            return
        pa = self.pa
        columns = []
        for f in self.schema:
            values = self.rows[f.name]
            if pa.types.is_fixed_size_list(f.type):
                flat = pa.array(np.concatenate(values).astype(f.type.value_type.to_pandas_dtype()))
                columns.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
            else:
                columns.append(pa.array(values, type=f.type))
        self.writer.write_table(pa.Table.from_arrays(columns, schema=self.schema))
        self.rows = {name: [] for name in self.rows}
        self.buffered = 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def open_writer(path: Path, fmt: str, metadata: dict, *, per_token: bool, compression: str, d_model: int):
    if fmt == "hdf5":
        return HDF5Writer(path, metadata, compression)
    if fmt == "npz":
        return NpzWriter(path, metadata, compression)
    if per_token:
        raise InputError("Parquet holds pooled vectors: add --pool mean|max|last or --stride N, or write "
                         "per-token embeddings to .h5 or .npz")
    return ParquetWriter(path, metadata, compression, d_model)


# --- the file API (what the CLI calls) ---------------------------------------------------------------

def embed_file(input: str | os.PathLike, output: str | os.PathLike, *, model=None, config=None,
               regions: list[str] | tuple[str, ...] = (), layers=None, pool: str | None = None,
               stride: int | None = None, rc_average: bool = False, chunk_size: int | None = None,
               window_mode: bool = False, window_overlap: int | None = None, batch_size: int = 1,
               out_dtype: str = "float32", compression: str = "gzip", force: bool = False,
               device: str | None = None, dtype: str | None = None, progress=None) -> dict:
    """Embed every record of `input` (FASTA/GenBank path or '-'), or `regions` of it as a reference, into
    `output` (.h5/.hdf5, .npz, .parquet by extension), atomically. `model` is a loaded StripedHyena2 or a
    spec for load_model (with `config` for an Evo 2 .pt). Returns a summary dict (records, bases, layers,
    output, seconds)."""
    import time

    from ..io import atomic_path, check_overwrite
    from .embed import DEFAULT_CHUNK_SIZE, Embedder, _load

    output = Path(output)
    fmt = output_format(output)
    check_overwrite(output, force)
    if fmt == "parquet" and pool in (None, "none", "token") and stride is None:
        open_writer(output, fmt, {}, per_token=True, compression=compression, d_model=0)  # raises
    if compression not in COMPRESSIONS:
        raise InputError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    records, _ = read_inputs(input, regions)
    net = _load(model, device, dtype, config)
    embedder = Embedder(net, layers, pool=pool, stride=stride, rc_average=rc_average,
                        chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size, window_mode=window_mode,
                        window_overlap=window_overlap, batch_size=batch_size, out_dtype=out_dtype)
    count = bases = 0
    began = time.perf_counter()
    with atomic_path(output) as tmp:
        writer = open_writer(tmp, fmt, embedder.metadata(), per_token=embedder.per_token,
                             compression=compression, d_model=net.config.d_model)
        try:
            for emb in embedder.iter_embed(records, target_factory=writer.target_factory, progress=progress):
                writer.write(emb)
                count += 1
                bases += emb.length
        finally:
            writer.close()
        if count == 0:
            raise InputError(f"{input}: no sequence records found")
    return {"records": count, "bases": bases, "layers": embedder.layers, "output": str(output),
            "seconds": time.perf_counter() - began}

