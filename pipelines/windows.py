"""Sequence helpers shared by the pipelines: reverse complement, N runs, windows.

Coordinates are 0-based half-open everywhere, as in the rest of evo2lite.
Sequences are handled as ``bytes`` (ASCII) or ``numpy.uint8`` arrays of byte values, which is also
what the byte-level tokenizer consumes, so nothing here needs to know about ids.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = [
    "COMPLEMENT_TABLE",
    "complement_lut",
    "reverse_complement",
    "reverse_complement_array",
    "find_n_runs",
    "split_on_n_runs",
    "iter_windows",
]

# IUPAC nucleotide codes and their complements. Ambiguity codes complement to the code of the
# complementary set (R = A|G -> Y = C|T, B = not A -> V = not T, ...); S, W and N are their own
# complement. U is read as RNA and complements to A, so U is the one letter where rc(rc(x)) != x.
_PAIRS = "ATTACGGCRYYRKMMKSSWWBVVBDHHDNNUA"
_FROM = _PAIRS[0::2] + _PAIRS[0::2].lower()
_TO = _PAIRS[1::2] + _PAIRS[1::2].lower()

#: ``bytes.translate`` table: complements IUPAC letters, keeps case, leaves every other byte
#: (gaps, EOS = 0, digits) unchanged.
COMPLEMENT_TABLE: bytes = bytes.maketrans(_FROM.encode(), _TO.encode())


def complement_lut() -> np.ndarray:
    """The complement as a 256-entry ``uint8`` lookup table (``lut[byte] -> complement byte``)."""
    return np.frombuffer(COMPLEMENT_TABLE, dtype=np.uint8).copy()


_LUT = complement_lut()


def reverse_complement(seq: str | bytes) -> str | bytes:
    """Reverse complement of a DNA sequence, IUPAC-aware and case-preserving.

    Returns the same type it was given. Characters that are not IUPAC nucleotide codes are kept
    as they are (only reversed), so gaps and EOS bytes survive.
    """
    if isinstance(seq, str):
        return seq.encode("ascii").translate(COMPLEMENT_TABLE)[::-1].decode("ascii")
    return bytes(seq).translate(COMPLEMENT_TABLE)[::-1]


def reverse_complement_array(seq: np.ndarray) -> np.ndarray:
    """Reverse complement along the last axis of a ``uint8`` array of byte values (a new array)."""
    if seq.dtype != np.uint8:
        raise ValueError(f"reverse_complement_array wants uint8 byte values, got {seq.dtype}")
    return _LUT[seq[..., ::-1]]


def find_n_runs(seq: bytes | np.ndarray, min_len: int = 1) -> list[tuple[int, int]]:
    """Maximal runs of ``N``/``n`` of length >= ``min_len`` as (start, end) pairs."""
    arr = np.frombuffer(seq, dtype=np.uint8) if isinstance(seq, (bytes, bytearray, memoryview)) else seq
    if arr.size == 0:
        return []
    is_n = (arr == ord("N")) | (arr == ord("n"))
    # Edges of the N runs: +1 where a run starts, -1 one past where it ends.
    edges = np.diff(is_n.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    keep = (ends - starts) >= min_len
    return [(int(s), int(e)) for s, e in zip(starts[keep], ends[keep])]


def split_on_n_runs(length: int, n_runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (start, end) pieces of ``[0, length)`` left after cutting out ``n_runs`` (non-empty only)."""
    pieces, pos = [], 0
    for start, end in n_runs:
        if start > pos:
            pieces.append((pos, start))
        pos = max(pos, end)
    if pos < length:
        pieces.append((pos, length))
    return pieces


def iter_windows(length: int, window: int, stride: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) windows of size ``window`` every ``stride`` that cover ``[0, length)``.

    The last window is shifted left to end exactly at ``length`` (so every window is full-size
    whenever ``length >= window``); a sequence shorter than the window gives one short window.
    """
    if window <= 0:
        raise ValueError(f"window must be positive, got {window}")
    stride = window if stride is None else stride
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if length <= 0:
        return
    if length <= window:
        yield 0, length
        return
    start = 0
    while True:
        if start + window >= length:
            yield length - window, length
            return
        yield start, start + window
        start += stride
