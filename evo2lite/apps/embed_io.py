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
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InputError
from .embed import Embedding, SeqInput
from .embed_reduce import DiskRows

__all__ = ["OUTPUT_FORMATS", "ReferenceSlice", "embed_file", "output_format", "plan_regions", "read_inputs",
           "open_writer", "safe_name"]

OUTPUT_FORMATS = {".h5": "hdf5", ".hdf5": "hdf5", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = ("gzip", "lzf", "none")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


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

class ReferenceSlice:
    """[start, end) of a reference contig, read lazily: len() and slicing (bytes), so a whole chromosome is
    fetched chunk by chunk as it is embedded, never whole."""

    def __init__(self, reference, contig: str, start: int, end: int) -> None:
        self.reference, self.contig, self.start, self.end = reference, contig, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, key) -> bytes:
        a, b, _ = key.indices(len(self))
        if b <= a:
            return b""
        return self.reference.fetch(self.contig, self.start + a, self.start + b).encode("ascii", "replace")


def plan_regions(reference, regions=(), regions_files=()) -> list[tuple[str, int, int, str]]:
    """(contig, start, end, label) of every requested interval, validated against the reference before
    anything runs. `regions`: region strings (samtools syntax, 1-based inclusive) or Region objects;
    `regions_files`: BED files (0-based). Labels: the BED name, the contig for a whole contig, else
    contig:start-end (1-based inclusive)."""
    from ..pipelines.regions import Region, parse_region, read_bed, resolve_regions

    wanted: list[tuple[Region, str | None]] = []
    for item in regions:
        if isinstance(item, Region):
            wanted.append((item, item.name if item.name != item.contig else None))
            continue
        if Path(str(item)).is_file() and str(item).lower().endswith((".bed", ".bed.gz", ".bed.bgz")):
            raise InputError(f"{item} is a BED file: pass it with -R/--regions-file (-r takes region strings)")
        wanted.append((parse_region(str(item)), None))
    for path in regions_files:
        bed = read_bed(path)
        if not bed:
            raise InputError(f"{path}: the BED file has no intervals")
        wanted += [(region, region.name) for region in bed]
    resolved = resolve_regions([r for r, _ in wanted], reference.contigs, reference.resolve)
    out = []
    for (asked, name), region in zip(wanted, resolved):
        whole = asked.start == 0 and asked.end is None and ":" not in (asked.name or "")
        label = name or (region.contig if whole else f"{region.contig}:{region.start + 1}-{region.end}")
        out.append((region.contig, region.start, region.end, label))
    return out


def count_bases(path: str | os.PathLike) -> int | None:
    """Bases in a FASTA file (from its .fai when present, else one pass over it), for a progress total;
    None for GenBank."""
    from ..pipelines.fasta import detect_format, open_binary

    fai = Path(str(path) + ".fai")
    if fai.is_file():
        try:
            return sum(int(line.split("\t")[1]) for line in fai.read_text().splitlines() if line.strip())
        except (IndexError, ValueError):
            pass
    if detect_format(path) != "fasta":
        return None
    total = 0
    with open_binary(path) as fh:
        for line in fh:
            if not line.startswith((b">", b";")):
                total += len(line.strip())
    return total


def read_inputs(input: str | os.PathLike, regions=(), regions_files=()) -> tuple[Iterator[SeqInput], int | None]:
    """(records, total bases or None) from a FASTA/GenBank path, or from `regions` / `regions_files` of a
    reference FASTA (plain or BGZF; records are lazy slices of it). Regions are all checked before this
    returns. For '-' (stdin), spool it first (evo2lite.io.input_path)."""
    if regions or regions_files:
        if str(input) == "-":
            raise InputError("regions need the reference FASTA as a file (plain or BGZF), not stdin")
        from ..pipelines.fasta import ReferenceGenome

        reference = ReferenceGenome(input)
        try:
            intervals = plan_regions(reference, list(regions), list(regions_files))
        except BaseException:
            reference.close()
            raise

        def fetch() -> Iterator[SeqInput]:
            with reference:
                for contig, start, end, label in intervals:
                    yield SeqInput(label, ReferenceSlice(reference, contig, start, end), contig=contig, start=start)

        return fetch(), sum(end - start for _, start, end, _ in intervals)
    from ..pipelines.fasta import detect_format, read_sequences

    path = Path(input)
    detect_format(path)  # a missing or non-sequence file fails now, before the model loads

    def stream() -> Iterator[SeqInput]:
        for rec in read_sequences(path):
            yield SeqInput(rec.name, rec.seq, contig=rec.name, description=rec.description)

    return stream(), None


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
            elif isinstance(array, DiskRows):  # spilled rows: copied in blocks
                dataset = group.create_dataset(layer, shape=array.shape, dtype=array.dtype,
                                               **self._filters(array.shape, array.dtype.itemsize))
                for a, rows in array.blocks():
                    dataset[a:a + rows.shape[0]] = rows
                array.close()
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

    def _put(self, member: str, array) -> None:
        with self.zip.open(member + ".npy", "w", force_zip64=True) as fh:
            if not isinstance(array, DiskRows):
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)
                return
            # spilled rows: the .npy header, then the rows in blocks (never the whole array in memory)
            header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                      "shape": array.shape}
            np.lib.format.write_array_header_2_0(fh, header)
            for _, rows in array.blocks():
                fh.write(np.ascontiguousarray(rows).tobytes())
            array.close()

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

    FLUSH_ROWS = 4096

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
        arrays = emb.arrays
        first = next(iter(arrays.values()))
        n = first.shape[0] if emb.stride else 1
        step = self.FLUSH_ROWS
        for i0 in range(0, n, step):  # per-window rows (maybe spilled to disk) a block at a time
            i1 = min(n, i0 + step)
            for i in range(i0, i1):
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
                block = array[i0:i1] if emb.stride else np.asarray(array)
                self.rows[layer].extend(np.asarray(block).reshape(i1 - i0, -1))
            self.buffered += i1 - i0
            if self.buffered >= self.FLUSH_ROWS:
                self._flush()
        for array in arrays.values():
            if isinstance(array, DiskRows):
                array.close()
        self.records.append(_record_meta(emb, emb.name, len(self.records)))

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
               regions=(), regions_files=(), layers=None, pool: str | None = None,
               stride: int | None = None, rc_average: bool = False, chunk_size: int | None = None,
               window_mode: bool = False, window_overlap: int | None = None, batch_size: int = 1,
               out_dtype: str = "float32", compression: str = "gzip", force: bool = False,
               device: str | None = None, dtype: str | None = None, fp8: str | None = None,
               allow_inexact: bool | None = None, progress=None, tag: str = "") -> dict:
    """Embed every record of `input` (FASTA/GenBank path or '-' for stdin), or `regions` (strings or
    Regions) / `regions_files` (BED) of it as a reference, into `output` (.h5/.hdf5, .npz, .parquet by
    extension), atomically, in memory bounded by the chunk (module docstring of embed_reduce). `model` is
    a loaded StripedHyena2 or a spec for load_model (with `config` for an Evo 2 .pt). `progress`: a
    callable given the bases just done, or True for a bar on stderr with a total and an ETA. Returns a
    summary dict (records, bases, layers, output, seconds); warns once about records that are not DNA."""
    import contextlib
    import time

    from ..io import atomic_path, check_output, input_path
    from ..progress import progress_bar, progress_shown
    from .embed import DEFAULT_CHUNK_SIZE, Embedder, _load
    from .input_check import DnaCheck

    output = Path(output)
    fmt = output_format(output)
    check_output(output, force)
    if fmt == "parquet" and pool in (None, "none", "token") and stride is None:
        open_writer(output, fmt, {}, per_token=True, compression=compression, d_model=0)  # raises
    if compression not in COMPRESSIONS:
        raise InputError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    with contextlib.ExitStack() as stack:
        use_regions = bool(regions or regions_files)
        path = input if use_regions else stack.enter_context(input_path(input))
        records, total = read_inputs(path, regions, regions_files)
        net = _load(model, device, dtype, config, fp8, allow_inexact)
        embedder = Embedder(net, layers, pool=pool, stride=stride, rc_average=rc_average,
                            chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                            window_mode=window_mode, window_overlap=window_overlap, batch_size=batch_size,
                            out_dtype=out_dtype, tag=tag)
        embedder.dna_check = check = DnaCheck()
        embedder.spill_dir = stack.enter_context(tempfile.TemporaryDirectory(
            prefix=".evo2lite-spill-", dir=output.parent))
        advance = progress
        if progress is True:
            if total is None and progress_shown():
                total = count_bases(path)
            strands = 2 if rc_average else 1
            advance = stack.enter_context(progress_bar("embedding", total=total and total * strands,
                                                       unit="bases"))
        count = bases = 0
        began = time.perf_counter()
        with atomic_path(output) as tmp:
            writer = open_writer(tmp, fmt, embedder.metadata(), per_token=embedder.per_token,
                                 compression=compression, d_model=net.config.d_model)
            try:
                for emb in embedder.iter_embed(records, target_factory=writer.target_factory, progress=advance):
                    writer.write(emb)
                    count += 1
                    bases += emb.length
            finally:
                writer.close()
            if count == 0:
                raise InputError(f"{input}: no sequence records found")
    check.report()
    return {"records": count, "bases": bases, "layers": embedder.layers, "output": str(output),
            "seconds": time.perf_counter() - began, "not_dna": check.flagged}
