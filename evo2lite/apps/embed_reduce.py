"""Bounded-memory pieces of `evo2lite embed`: reading a record's strands chunk by chunk, and reducing the
chunks of embeddings into per-token rows, pooled vectors or per-window means.

Memory is bounded by the chunk, not the record: a strand's token ids are made per chunk from the record
(which may itself be a lazy slice of an indexed reference), pooling keeps running sums, and per-token or
per-window rows too large for memory (> SPILL_BYTES) go to a `DiskRows` file in a spill folder (the
output's folder) instead of a numpy array; the writers copy them into the output in blocks.

Legend: L record length, D d_model, W windows, l rows of one chunk.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

from ..tokenizer import to_bytes

SPILL_BYTES = 64 << 20  # per array; larger per-token / per-window arrays go to disk when a spill folder is set
BLOCK_BYTES = 4 << 20  # rows copied per block when a DiskRows is read back


class DiskRows:
    """A (rows, D) array kept in an unlinked temporary file: slice reads and writes, zeros where nothing was
    written yet. Enough of the numpy interface for the reducers and writers (shape, dtype, ndim, len, [a:b])."""

    def __init__(self, folder: str | os.PathLike, shape: tuple[int, int], dtype) -> None:
        self.shape, self.dtype, self.ndim = (int(shape[0]), int(shape[1])), np.dtype(dtype), 2
        self.row_bytes = self.shape[1] * self.dtype.itemsize
        fd, name = tempfile.mkstemp(prefix=".evo2lite-rows-", suffix=".bin", dir=folder)
        self._fd = fd
        os.unlink(name)  # the space is freed when the file closes, however the run ends
        os.ftruncate(fd, self.shape[0] * self.row_bytes)  # sparse: unwritten rows read as zeros

    def __len__(self) -> int:
        return self.shape[0]

    def _range(self, key) -> tuple[int, int]:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("DiskRows supports contiguous row slices only")
        start, stop, _ = key.indices(self.shape[0])
        return start, max(start, stop)

    def __getitem__(self, key) -> np.ndarray:
        a, b = self._range(key)
        data = os.pread(self._fd, (b - a) * self.row_bytes, a * self.row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(b - a, self.shape[1]).copy()

    def __setitem__(self, key, values) -> None:
        a, b = self._range(key)
        data = np.ascontiguousarray(np.broadcast_to(values, (b - a, self.shape[1])), dtype=self.dtype)
        os.pwrite(self._fd, data.tobytes(), a * self.row_bytes)

    def blocks(self, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, rows) in order, about BLOCK_BYTES at a time."""
        step = block_rows or max(1, BLOCK_BYTES // max(1, self.row_bytes))
        for a in range(0, self.shape[0], step):
            yield a, self[a:a + step]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        self.close()


def row_blocks(array, block_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of a numpy array, DiskRows or HDF5 dataset, a bounded block at a time."""
    if isinstance(array, DiskRows):
        yield from array.blocks(block_rows)
        return
    rows = array.shape[0] if array.ndim else 1
    width = int(np.prod(array.shape[1:])) if array.ndim > 1 else 1
    step = block_rows or max(1, BLOCK_BYTES // max(1, width * array.dtype.itemsize))
    if array.ndim < 2:
        yield 0, np.asarray(array[()])
        return
    for a in range(0, rows, step):
        yield a, np.asarray(array[a:a + step])


def new_rows(shape: tuple[int, int], dtype, spill_dir: str | os.PathLike | None):
    """Zero rows in memory, or on disk (DiskRows) when larger than SPILL_BYTES and a spill folder is set."""
    if spill_dir is not None and shape[0] * shape[1] * np.dtype(dtype).itemsize > SPILL_BYTES:
        return DiskRows(spill_dir, shape, dtype)
    return np.zeros(shape, dtype=dtype)


# --- strands -----------------------------------------------------------------------------------------

class Strand:
    """One strand of a record as token ids, made per chunk: `ids(a, b)` is positions [a, b) of the forward
    sequence, or of its reverse complement. `seq` is bytes/str or any object with len() and slicing that
    returns bytes/str (e.g. a lazy slice of a reference)."""

    def __init__(self, seq, reverse: bool) -> None:
        if isinstance(seq, (str, bytes, bytearray)) and ("|" in seq if isinstance(seq, str) else b"|" in seq):
            # a |tag| may straddle a chunk boundary: the case policy needs the whole text (spec §5)
            from ..pipelines.windows import reverse_complement

            raw = seq.encode("utf-8") if isinstance(seq, str) else bytes(seq)
            seq, reverse = to_bytes(reverse_complement(raw) if reverse else raw), False
            self._whole = True
        else:
            self._whole = False
        self.seq, self.reverse, self.length = seq, reverse, len(seq)

    def text(self, a: int, b: int) -> bytes:
        """The bytes the model sees at [a, b) of this strand."""
        if self._whole:
            return bytes(self.seq[a:b])
        L = self.length
        piece = self.seq[L - b:L - a] if self.reverse else self.seq[a:b]
        piece = piece.encode("utf-8") if isinstance(piece, str) else bytes(piece)
        if self.reverse:
            from ..pipelines.windows import reverse_complement

            piece = reverse_complement(piece)
        return to_bytes(piece)

    def ids(self, a: int, b: int) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(self.text(a, b), dtype=np.uint8).astype(np.int64))


# --- reducers ----------------------------------------------------------------------------------------

class Reducer:
    """Consumes one layer's chunks of one record, forward pass first, then (rc) the reverse-complement
    pass, whose positions are mapped back onto forward coordinates."""

    def __init__(self, mode: str, length: int, d_model: int, *, stride: int | None, rc: bool,
                 out_dtype: np.dtype, device: torch.device, target=None, spill_dir=None) -> None:
        self.mode, self.L, self.D, self.stride, self.rc = mode, length, d_model, stride, rc
        self.out_dtype, self.spill_dir = out_dtype, spill_dir
        self.scale = 0.5 if rc else 1.0  # (f + r) / 2 == f/2 + r/2 exactly in binary floating point
        self.tokens = None
        if mode == "token" or (mode == "max" and rc):
            # the token rows; for max+rc fp32 rows aligning the two strands
            dtype = out_dtype if mode == "token" else np.float32
            self.tokens = target if target is not None else new_rows((length, d_model), dtype, spill_dir)
        elif mode in ("mean", "last"):
            self.acc = torch.zeros(d_model, dtype=torch.float32, device=device)
        elif mode == "max":
            self.acc = torch.full((d_model,), -math.inf, dtype=torch.float32, device=device)
        elif mode == "stride":
            num_windows = -(-length // stride)
            counts = np.minimum(stride, length - stride * np.arange(num_windows)).astype(np.float32)
            self.counts = counts * (2 if rc else 1)
            rows = new_rows((num_windows, d_model), np.float32, spill_dir)
            # small: a running sum on the device; large: per-chunk partial means added into rows on disk
            self.acc = rows if isinstance(rows, DiskRows) else torch.zeros(num_windows, d_model,
                                                                          dtype=torch.float32, device=device)
        else:
            raise AssertionError(mode)

    def add(self, start: int, x_lD: torch.Tensor, reverse: bool) -> None:
        """Rows of x are positions start.. of the forward sequence, or of the reverse complement."""
        x_lD = x_lD.float()
        n = x_lD.shape[0]
        if reverse:  # RC position j is forward position L-1-j
            x_lD, start = x_lD.flip(0), self.L - start - n
        if self.tokens is not None:
            values = (x_lD * self.scale).cpu().numpy()
            if reverse:  # the forward pass already wrote these rows
                self.tokens[start:start + n] = self.tokens[start:start + n] + values
            else:
                self.tokens[start:start + n] = values.astype(self.tokens.dtype, copy=False)
        elif self.mode == "mean":
            self.acc += x_lD.sum(0)
        elif self.mode == "max":
            torch.maximum(self.acc, x_lD.amax(0), out=self.acc)
        elif self.mode == "last":
            # each strand's own last token: forward position L-1, or RC position L-1 (= forward 0)
            pos = 0 if reverse else self.L - 1
            if start <= pos < start + n:
                self.acc += x_lD[pos - start] * self.scale
        elif isinstance(self.acc, DiskRows):
            w0, w1 = start // self.stride, (start + n - 1) // self.stride + 1
            window = torch.arange(start, start + n, device=x_lD.device) // self.stride - w0
            part = torch.zeros(w1 - w0, self.D, dtype=torch.float32, device=x_lD.device)
            part.index_add_(0, window, x_lD)
            part = part.cpu().numpy() / self.counts[w0:w1, None]
            self.acc[w0:w1] = self.acc[w0:w1] + part
        else:
            window = torch.arange(start, start + n, device=x_lD.device) // self.stride
            self.acc.index_add_(0, window, x_lD)

    def result(self):
        if self.mode == "token":
            return self.tokens
        if self.tokens is not None:  # max + rc: the max over the aligned average rows
            best = np.full(self.D, -np.inf, dtype=np.float32)
            for _, rows in row_blocks(self.tokens):
                best = np.maximum(best, rows.max(axis=0))
            self._close(self.tokens)
            return best.astype(self.out_dtype)
        if isinstance(self.acc, DiskRows):
            if self.out_dtype == self.acc.dtype:
                return self.acc
            out = DiskRows(self.spill_dir, self.acc.shape, self.out_dtype)
            for a, rows in self.acc.blocks():
                out[a:a + rows.shape[0]] = rows
            self.acc.close()
            return out
        acc = self.acc
        if self.mode == "mean":
            acc = acc / (self.L * (2 if self.rc else 1))
        elif self.mode == "stride":
            acc = acc / torch.as_tensor(self.counts, device=acc.device)[:, None]
        return acc.cpu().numpy().astype(self.out_dtype)

    @staticmethod
    def _close(rows) -> None:
        if isinstance(rows, DiskRows):
            rows.close()
