"""Training data helpers: a compact 2-bit transport form of a built corpus, and evaluation windows.

A built corpus (evo2lite.pipelines.corpus.build_corpus) stores one byte per base. To move a corpus to a
machine with a small transfer budget (a leased GPU), `pack_corpus` writes each split as

    <split>.codes.bin     2 bits per position (A=0 C=1 G=2 T=3, 4 positions per byte, low bits first)
    <split>.runs.npz      every maximal run of one non-ACGT byte (EOS separators, N, IUPAC codes) and of
                          soft-masked positions, as (start, length[, byte]) arrays
    <split>.index.json.gz the split's index.json, byte for byte
    corpus.json.gz        the build summary, byte for byte
    packed.json           format, per-split token counts and the sha256 of tokens.bin and mask.bin

and `unpack_corpus` rebuilds the split folders byte-identically (it checks the sha256), so the training
loader (evo2lite.pipelines.datasets) reads exactly what it would have read from the original build.
Nothing here needs pysam or biopython.

`evaluate` gives bits/base per organism on evaluation windows of a split (used by train.py during training and
by benchmarks/val_bits.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Evo2LiteError

PACK_FORMAT = "evo2lite-2bit/1"
_ACGT = np.frombuffer(b"ACGT", dtype=np.uint8)
_CODE = np.full(256, 255, dtype=np.uint8)
_CODE[_ACGT] = np.arange(4, dtype=np.uint8)
IS_BASE = np.zeros(256, dtype=bool)  # byte values that count as a base for bits/base
IS_BASE[_ACGT] = True


def _runs(flag: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths) of the maximal runs where flag is true (and, with values, the value is constant)."""
    idx = np.flatnonzero(flag)
    if idx.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    brk = np.diff(idx) != 1
    if values is not None:
        brk |= values[idx[1:]] != values[idx[:-1]]
    starts = idx[np.concatenate([[True], brk])]
    ends = idx[np.concatenate([brk, [True]])] + 1
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


def _sha256(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    for i in range(0, arr.size, 1 << 26):
        h.update(arr[i:i + (1 << 26)].tobytes())
    return h.hexdigest()


def pack_corpus(corpus_dir: str | Path, out_dir: str | Path, splits: tuple[str, ...] = ("train", "val")) -> dict:
    """Write the 2-bit transport form of the given splits of a built corpus. Returns packed.json."""
    src, out = Path(corpus_dir), Path(out_dir)
    if not (src / "corpus.json").is_file():
        raise Evo2LiteError(f"{src} is not a built corpus (no corpus.json); build one with "
                            "`python -m evo2lite.pipelines.corpus MANIFEST OUT`")
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json.gz").write_bytes(gzip.compress((src / "corpus.json").read_bytes(), mtime=0))
    meta = {"format": PACK_FORMAT, "splits": {}}
    for split in splits:
        folder = src / split
        if not (folder / "index.json").is_file():
            raise Evo2LiteError(f"{src} has no {split!r} split")
        tokens = np.fromfile(folder / "tokens.bin", dtype=np.uint8)
        mask = np.fromfile(folder / "mask.bin", dtype=np.uint8)
        codes = _CODE[tokens]
        special = codes == 255
        n = tokens.size
        padded = np.zeros(-(-n // 4) * 4, dtype=np.uint8)
        padded[:n] = np.where(special, 0, codes)
        quads = padded.reshape(-1, 4)
        packed = quads[:, 0] | (quads[:, 1] << 2) | (quads[:, 2] << 4) | (quads[:, 3] << 6)
        packed.astype(np.uint8).tofile(out / f"{split}.codes.bin")
        ex_start, ex_len = _runs(special, tokens)
        mk_start, mk_len = _runs(mask != 0)
        np.savez(out / f"{split}.runs.npz", ex_start=ex_start, ex_len=ex_len, ex_byte=tokens[ex_start],
                 mask_start=mk_start, mask_len=mk_len)
        (out / f"{split}.index.json.gz").write_bytes(
            gzip.compress((folder / "index.json").read_bytes(), mtime=0))
        meta["splits"][split] = {"num_tokens": int(n), "tokens_sha256": _sha256(tokens),
                                 "mask_sha256": _sha256(mask), "special_runs": int(ex_start.size),
                                 "mask_runs": int(mk_start.size)}
    (out / "packed.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def unpack_corpus(packed_dir: str | Path, out_dir: str | Path) -> Path:
    """Rebuild the built-corpus folders from a 2-bit pack, checking every file's sha256. Idempotent: an
    out_dir already unpacked from the same pack is reused."""
    src, out = Path(packed_dir), Path(out_dir)
    meta_raw = (src / "packed.json").read_text()
    meta = json.loads(meta_raw)
    if meta.get("format") != PACK_FORMAT:
        raise Evo2LiteError(f"{src}/packed.json: format {meta.get('format')!r}, expected {PACK_FORMAT}")
    stamp = out / ".unpacked_from"
    if stamp.is_file() and stamp.read_text() == meta_raw:
        return out
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.json").write_bytes(gzip.decompress((src / "corpus.json.gz").read_bytes()))
    lut = np.concatenate([_ACGT, _ACGT])  # index = 2-bit code
    for split, info in meta["splits"].items():
        n = info["num_tokens"]
        packed = np.fromfile(src / f"{split}.codes.bin", dtype=np.uint8)
        codes = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:n]
        tokens = lut[codes]
        runs = np.load(src / f"{split}.runs.npz")
        for s, length, b in zip(runs["ex_start"], runs["ex_len"], runs["ex_byte"]):
            tokens[s:s + length] = b
        mask = np.zeros(n, dtype=np.uint8)
        for s, length in zip(runs["mask_start"], runs["mask_len"]):
            mask[s:s + length] = 1
        if _sha256(tokens) != info["tokens_sha256"] or _sha256(mask) != info["mask_sha256"]:
            raise Evo2LiteError(f"{src}: split {split!r} does not unpack to the packed checksums; the pack is corrupt")
        folder = out / split
        folder.mkdir(exist_ok=True)
        tokens.tofile(folder / "tokens.bin")
        mask.tofile(folder / "mask.bin")
        (folder / "index.json").write_bytes(gzip.decompress((src / f"{split}.index.json.gz").read_bytes()))
    stamp.write_text(meta_raw)
    return out


def resolve_corpus(path: str | Path, work_dir: str | Path) -> Path:
    """A built corpus folder for `path`: itself when it is one, else its unpacked 2-bit pack."""
    path = Path(path)
    if (path / "corpus.json").is_file():
        return path
    if (path / "packed.json").is_file():
        return unpack_corpus(path, Path(work_dir) / "corpus_unpacked")
    raise Evo2LiteError(f"corpus {path}: neither a built corpus (corpus.json) nor a 2-bit pack (packed.json)")


def eval_windows(entries: list[dict], num_tokens: int, window: int, per_organism: int
                 ) -> dict[str, list[int]]:
    """Window start offsets (into a split's tokens.bin) for evaluation, per organism: a grid of
    non-overlapping windows over the stream span of each organism's records, thinned evenly to at most
    `per_organism`. Deterministic. Windows may cross an EOS into the next record, as in training."""
    spans: dict[str, list[int]] = {}
    for e in entries:
        lo, hi = e["offset"], e["offset"] + e["length"] + 1
        span = spans.setdefault(e["organism"], [lo, hi])
        span[0], span[1] = min(span[0], lo), max(span[1], hi)
    out = {}
    for organism, (lo, hi) in sorted(spans.items()):
        hi = min(hi, num_tokens)
        if hi - lo < window:
            lo = max(0, hi - window)
            if hi - lo < window:
                continue
        starts = np.arange(lo, hi - window + 1, window)
        if starts.size > per_organism:
            starts = starts[np.linspace(0, starts.size - 1, per_organism).round().astype(int)]
        out[organism] = [int(s) for s in starts]
    return out


def organism_of_positions(entries: list[dict], positions: np.ndarray) -> np.ndarray:
    """Index into sorted(set(organisms)) of the record that holds each stream position (EOS included)."""
    names = sorted({e["organism"] for e in entries})
    lookup = {n: i for i, n in enumerate(names)}
    offsets = np.array([e["offset"] for e in entries], dtype=np.int64)
    ids = np.array([lookup[e["organism"]] for e in entries], dtype=np.int64)
    order = np.argsort(offsets, kind="stable")
    where = np.searchsorted(offsets[order], positions, side="right") - 1
    return ids[order][np.clip(where, 0, None)]


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, seq_len: int, per_organism: int, batch_size: int,
             device: torch.device, autocast) -> dict[str, dict]:
    """bits/base (over A/C/G/T targets) and nats/token (over all targets) per organism on windows of
    `split` (a pipelines.datasets.PackedSplit), plus their totals under "all"."""
    was_training = model.training
    model.eval()
    windows = eval_windows(split.entries, split.num_tokens, seq_len + 1, per_organism)
    names = sorted({e["organism"] for e in split.entries})
    sums = np.zeros((len(names), 4))  # base nll (nats), bases, token nll, tokens
    flat = [s for starts in windows.values() for s in starts]
    for i in range(0, len(flat), batch_size):
        starts = np.array(flat[i:i + batch_size], dtype=np.int64)
        pos = starts[:, None] + np.arange(seq_len + 1)[None, :]
        ids = np.asarray(split.tokens[pos.reshape(-1)]).reshape(pos.shape)
        ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
        with autocast():
            logits = model(ids_t[:, :-1])
        nll = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), ids_t[:, 1:].reshape(-1),
                              reduction="none").double().cpu().numpy()
        targets = ids[:, 1:].reshape(-1)
        org = organism_of_positions(split.entries, pos[:, 1:].reshape(-1))
        base = IS_BASE[targets]
        sums[:, 0] += np.bincount(org, weights=nll * base, minlength=len(names))
        sums[:, 1] += np.bincount(org, weights=base.astype(float), minlength=len(names))
        sums[:, 2] += np.bincount(org, weights=nll, minlength=len(names))
        sums[:, 3] += np.bincount(org, minlength=len(names))
    out = {}
    for name, (bn, nb, tn, nt) in zip(names + ["all"], np.vstack([sums, sums.sum(0)])):
        if nt:
            out[name] = {"bits_per_base": bn / nb / math.log(2) if nb else float("nan"),
                         "nats_per_token": tn / nt, "bases": int(nb), "tokens": int(nt)}
    model.train(was_training)
    return out
