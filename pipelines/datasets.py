"""Training loader over packed shards (see :mod:`evo2lite.pipelines.corpus` for the layout).

A split's ``tokens.bin`` is one stream of records joined by EOS (byte 0), as Evo 2 packs its
pretraining data; windows are cut from that stream and may cross an EOS, which teaches the model
where sequences end. The window length is chosen here, at load time, not when the corpus is built.

Sampling is a pure function of ``(corpus, split, seq_len, seed, index)`` (and of the region BED and weight):

* epoch ``e`` starts the window grid at a random offset in ``[0, seq_len)`` and visits its
  ``num_windows`` non-overlapping windows in a random permutation, so each epoch covers the split
  once, with boundaries that move between epochs;
* with ``region_bed`` and ``region_weight=w`` (:mod:`evo2lite.pipelines.region_weights`), every window
  of the epoch's grid that holds at least one base of the BED's regions enters the epoch's permutation
  ``w`` times (a fractional ``w``: ``floor(w)`` times plus once more with probability ``w - floor(w)``,
  drawn from the epoch's generator), so an epoch still covers the split and draws those windows ``w`` times
  as often; epochs then differ in length, and sample ``i`` is found from the epochs' cumulative lengths;
  ``region_organism`` maps the BED's contigs onto that organism's records only (a split may hold records
  whose names meet under one contig key, e.g. human ``X`` and C. elegans ``chrX``);
* reverse-complement augmentation is a per-sample coin flip (probability ``rc_prob``); the
  soft-mask is reversed with the sequence, EOS stays EOS;
* with several data-parallel ranks, rank ``r`` of ``w`` takes global samples ``r, r + w, ...``.

So resuming is exact: ``state_dict()`` records the next sample index (plus what must match), and
``load_state_dict`` restores it; the next batch is the one an uninterrupted run would have drawn.
Reading a window is a memory-map slice, cheap enough that no DataLoader worker processes are needed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from evo2lite.errors import Evo2LiteError, InputError

from .corpus import SHARD_FORMAT, SPLITS, chr17_name_reason
from .region_weights import StreamRegions
from .windows import complement_lut

__all__ = ["PackedSplit", "TokenWindowDataset"]

_LUT = complement_lut()


class PackedSplit:
    """Memory-mapped ``tokens.bin`` / ``mask.bin`` / ``index.json`` of one split of a built corpus."""

    def __init__(self, corpus_dir: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        self.folder = Path(corpus_dir) / split
        index_path = self.folder / "index.json"
        if not index_path.is_file():
            have = [s for s in SPLITS if (Path(corpus_dir) / s / "index.json").is_file()]
            raise InputError(
                f"{corpus_dir} has no {split!r} split (it has: {', '.join(have) or 'nothing'}); "
                "build it with `evo2lite data build MANIFEST -o DIR`"
            )
        raw = index_path.read_bytes()
        self.index = json.loads(raw)
        if self.index.get("format") != SHARD_FORMAT:
            raise InputError(f"{index_path}: format {self.index.get('format')!r}, this evo2lite reads {SHARD_FORMAT}")
        # Defence in depth: a shard built by other tools (or edited by hand) is re-checked by name.
        for e in self.index["entries"]:
            reason = chr17_name_reason(e["record"])
            if reason is not None and not _non_human_declared(e):
                raise Evo2LiteError(f"{index_path}: {reason}; this shard must not be used (rebuild the corpus)")
        self.corpus_id = hashlib.sha256(raw).hexdigest()[:16]
        self.num_tokens = int(self.index["num_tokens"])
        self.tokens = self._map("tokens.bin")
        self.mask = self._map("mask.bin")
        self.entries = self.index["entries"]

    def _map(self, name: str) -> np.ndarray:
        path = self.folder / name
        size = path.stat().st_size if path.is_file() else -1
        if size != self.num_tokens:
            raise InputError(
                f"{path}: {size} bytes, index.json says {self.num_tokens}; the corpus is incomplete, rebuild it")
        if size == 0:
            return np.zeros(0, dtype=np.uint8)
        return np.memmap(path, dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.entries)

    def record(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and mask of entry ``i`` (without its EOS)."""
        e = self.entries[i]
        return self.tokens[e["offset"] : e["offset"] + e["length"]], self.mask[e["offset"] : e["offset"] + e["length"]]


def _non_human_declared(entry: dict) -> bool:
    # A bare "17" from a non-human source was let through at build time only under
    # allow_chr17_name; the organism in the index is what tells it apart here.
    from .corpus_guard import _looks_human

    org = entry.get("organism", "")
    return bool(org) and not _looks_human(org) and chr17_name_reason(entry["record"], allow_bare=True) is None


class TokenWindowDataset(torch.utils.data.IterableDataset):
    """Endless, deterministic, resumable windows of ``seq_len`` tokens from one split.

    Each sample is a dict: ``input_ids`` (int64 ``[seq_len]``, byte values, EOS = 0) and
    ``loss_weights`` (float32 ``[seq_len]``: 1.0, or ``soft_mask_weight`` where the source base was
    lower case; Evo 2 used 0.1). ``shuffle=False`` gives the plain in-order grid from offset 0 with no
    reverse complement, which is what evaluation wants.
    """

    def __init__(
        self,
        corpus_dir: str | Path,
        split: str = "train",
        seq_len: int = 8192,
        *,
        seed: int = 0,
        shuffle: bool = True,
        rc_prob: float = 0.5,
        soft_mask_weight: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
        region_bed: str | Path | None = None,
        region_weight: float = 1.0,
        region_organism: str | None = None,
    ):
        super().__init__()
        if seq_len < 1:
            raise InputError(f"seq_len must be positive, got {seq_len}")
        if not 0.0 <= rc_prob <= 1.0:
            raise InputError(f"rc_prob must be in [0, 1], got {rc_prob}")
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not in [0, world_size={world_size})")
        self.data = PackedSplit(corpus_dir, split)
        self.split, self.seq_len, self.seed = split, int(seq_len), int(seed)
        self.shuffle = shuffle
        self.rc_prob = rc_prob if shuffle else 0.0
        self.soft_mask_weight = float(soft_mask_weight)
        self.rank, self.world_size = rank, world_size
        self.num_samples = num_samples
        # Windows per epoch: enough room for any start offset in [0, seq_len).
        total = self.data.num_tokens
        self.num_windows = (total - (seq_len - 1)) // seq_len if shuffle else total // seq_len
        if self.num_windows < 1:
            raise InputError(
                f"split {split!r} holds {total} tokens, fewer than one window of seq_len={seq_len} "
                f"(shuffled windows need {2 * seq_len - 1}); use a shorter seq_len or more data"
            )
        self.regions: StreamRegions | None = None
        self.region_state = None
        if region_bed is not None:
            if not shuffle:
                raise InputError("region weights apply to shuffled (training) windows only")
            if not (np.isfinite(region_weight) and region_weight > 0):
                raise InputError(f"region_weight must be a positive number, got {region_weight}")
            from .regions import read_bed

            entries = self.data.entries
            if region_organism is not None:  # BED contigs name records of this organism only (human X vs worm chrX)
                entries = [e for e in entries if e.get("organism") == region_organism]
                if not entries:
                    have = sorted({e.get("organism", "") for e in self.data.entries})
                    raise InputError(f"region_weights organism {region_organism!r} has no records in split "
                                     f"{split!r} (it has: {', '.join(have)})")
            self.regions = StreamRegions(read_bed(region_bed), entries, str(region_bed))
            self.region_weight = float(region_weight)
            self.region_state = {"bed_sha256": StreamRegions.file_id(region_bed), "weight": self.region_weight}
            if region_organism is not None:  # absent when not given: pilot 3's checkpoints resume unchanged
                self.region_state["organism"] = region_organism
        self.position = 0  # next sample index in this rank's stream
        self._epoch_cache: tuple[int, int, np.ndarray, np.ndarray] | None = None
        self._epoch_ends: list[int] = []  # cumulative epoch lengths (region weights only)

    # ---- pure sampling ------------------------------------------------------------------------

    def _epoch(self, epoch: int) -> tuple[int, np.ndarray, np.ndarray]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                offset = int(rng.integers(0, self.seq_len))
                if self.regions is None:
                    order = rng.permutation(self.num_windows)
                else:
                    order = rng.permutation(np.repeat(np.arange(self.num_windows), self._copies(offset, rng)))
                flips = rng.random(order.size) < self.rc_prob
            else:
                offset, order = 0, np.arange(self.num_windows)
                flips = np.zeros(self.num_windows, dtype=bool)
            self._epoch_cache = (epoch, offset, order, flips)
        return self._epoch_cache[1:]

    def _starts(self, offset: int) -> np.ndarray:
        return offset + np.arange(self.num_windows, dtype=np.int64) * self.seq_len

    def _copies(self, offset: int, rng: np.random.Generator) -> np.ndarray:
        """How often each window of the grid at `offset` enters the epoch (region weights)."""
        hit = self.regions.in_windows(self._starts(offset), self.seq_len) > 0
        w = self.region_weight
        extra = rng.random(self.num_windows) < w - np.floor(w)
        return np.where(hit, int(np.floor(w)) + extra, 1)

    def _locate(self, global_index: int) -> tuple[int, int]:
        """(epoch, index within it) of a global sample: plain division, or the weighted epochs' lengths."""
        if self.regions is None:
            return divmod(global_index, self.num_windows)
        while not self._epoch_ends or self._epoch_ends[-1] <= global_index:
            n = self._epoch(len(self._epoch_ends))[1].size
            self._epoch_ends.append((self._epoch_ends[-1] if self._epoch_ends else 0) + n)
        epoch = int(np.searchsorted(self._epoch_ends, global_index, side="right"))
        return epoch, global_index - (self._epoch_ends[epoch - 1] if epoch else 0)

    def region_stats(self, epoch: int = 0) -> dict:
        """Share of the windows drawn in `epoch` that hold region bases, and of the region bases among the
        tokens drawn, weighted and (same grid) uniform; what train.py logs at start."""
        offset, order, _ = self._epoch(epoch)
        per_window = self.regions.in_windows(self._starts(offset), self.seq_len)
        drawn = per_window[order]
        return {"bed_bases": self.regions.bases, "bed_bases_outside_split": self.regions.bases_outside,
                "weight": self.region_weight, "windows_per_epoch": int(order.size),
                "uniform_windows_per_epoch": self.num_windows,
                "window_share": float((drawn > 0).mean()), "uniform_window_share": float((per_window > 0).mean()),
                "token_share": float(drawn.sum() / (order.size * self.seq_len)),
                "uniform_token_share": float(per_window.sum() / (self.num_windows * self.seq_len))}

    def window(self, global_index: int) -> tuple[int, bool]:
        """(start offset in tokens.bin, reverse-complemented?) of global sample ``global_index``."""
        epoch, k = self._locate(int(global_index))
        offset, order, flips = self._epoch(epoch)
        return offset + int(order[k]) * self.seq_len, bool(flips[k])

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """Sample ``index`` of this rank's stream (a pure function of the configuration)."""
        start, rc = self.window(index * self.world_size + self.rank)
        tok = np.asarray(self.data.tokens[start : start + self.seq_len])
        msk = np.asarray(self.data.mask[start : start + self.seq_len])
        if rc:
            tok = _LUT[tok[::-1]]
            msk = msk[::-1]
        weights = np.where(msk != 0, np.float32(self.soft_mask_weight), np.float32(1.0)).astype(np.float32)
        return {"input_ids": torch.from_numpy(tok.astype(np.int64)), "loss_weights": torch.from_numpy(weights)}

    # ---- iteration and resume -------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise Evo2LiteError(
                "TokenWindowDataset reads from a memory map and keeps its own resume position: use "
                "DataLoader(num_workers=0) or iterate it directly / with .batches(batch_size)"
            )
        while self.num_samples is None or self.position < self.num_samples:
            item = self.sample(self.position)
            self.position += 1
            yield item

    def batches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """Stacked batches ``{"input_ids": [B, L], "loss_weights": [B, L]}`` from the current position."""
        while self.num_samples is None or self.position < self.num_samples:
            end = self.position + batch_size
            if self.num_samples is not None:
                end = min(end, self.num_samples)
            items = [self.sample(i) for i in range(self.position, end)]
            self.position = end
            yield {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def state_dict(self) -> dict:
        state = {"position": self.position, "seed": self.seed, "seq_len": self.seq_len, "split": self.split,
                 "shuffle": self.shuffle, "rc_prob": self.rc_prob, "rank": self.rank,
                 "world_size": self.world_size, "corpus_id": self.data.corpus_id}
        if self.region_state is not None:  # absent when unweighted: older checkpoints resume unchanged
            state["region_weights"] = self.region_state
        return state

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()
        if state.get("region_weights") != mine.get("region_weights"):
            raise Evo2LiteError(
                f"cannot resume: the saved loader state has region_weights={state.get('region_weights')!r} "
                f"but this loader has {mine.get('region_weights')!r}; resume with the same BED and weight")
        for key, value in state.items():
            if key != "position" and key in mine and mine[key] != value:
                raise Evo2LiteError(
                    f"cannot resume: the saved loader state has {key}={value!r} but this loader has "
                    f"{mine[key]!r}; resume with the same corpus and settings"
                )
        self.position = int(state["position"])
