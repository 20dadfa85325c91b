"""Embeddings of DNA of any length from any layer, exact, streamed in bounded memory (`evo2lite embed`).

Exact mode (the default): a record is run through the model `chunk_size` tokens at a time with an
InferenceState that carries every block's memory (featurizer and SE/MR FIR tails, the LR modal state and
the attention KV cache), so the embeddings equal one full-sequence forward pass, to rounding, whatever the
chunk size. Memory is the weights + activations of one chunk + the KV cache, which grows with the length:
2 (K and V) x attention blocks run x L x d_model x bytes per value (docs/embed.md has the numbers). Only
the blocks up to the deepest requested layer run.

Window mode (`window_mode=True`, an approximation): independent windows of `chunk_size` tokens that
overlap by `window_overlap`; each token is taken from the first window in which it has at least
`window_overlap` tokens of left context (or all of it). Memory no longer grows with the length.

Layers: `blocks.N` (residual stream after block N), `blocks.N.mlp` (MLP output of block N before its
residual add), `final` (after the final norm). Evo 2 names are accepted: `blocks.N.mlp.l3`, `blocks-N`,
`norm`; negative N counts from the last block.

Outputs per record and layer: per-token (L, D); `pool` "mean" | "max" | "last" -> (D,); `stride` S ->
(ceil(L / S), D) means over the windows [iS, (i+1)S). With `rc_average` the reverse complement is
embedded too and its per-token embeddings are flipped back onto forward coordinates and averaged with the
forward ones before pooling (so "max" is the max of the averages); "last" averages the last token of
each strand's own pass (the token that has seen the whole sequence), as Evo 2's exon classifier does.

Legend: B batch, L length, D d_model, W windows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Evo2LiteError, InputError
from ..tokenizer import PAD_ID, encode
from .embed_reduce import Reducer, Strand

__all__ = ["Embedding", "Embedder", "SeqInput", "embed", "default_layer", "layer_names", "resolve_layers",
           "DEFAULT_CHUNK_SIZE", "POOLS"]

DEFAULT_CHUNK_SIZE = 8192
POOLS = ("mean", "max", "last")
# The default layer sits at this fraction of the depth: blocks.26 of Evo 2 7B's 32 (what Evo 2's exon
# classifier uses), blocks.5 of the 7-block debug model. Measured by benchmarks/embed_layer_probe.py;
# docs/embed.md says what was measured and with which model.
DEFAULT_DEPTH = 0.84
_LAYER_RE = re.compile(r"^blocks[.-](-?\d+)(\.mlp(?:\.l3)?)?$")
_FINAL_ALIASES = ("final", "norm", "final_norm")
_OUT_DTYPES = {"float32": np.float32, "float16": np.float16}


# --- layers ------------------------------------------------------------------------------------------

def layer_names(config) -> list[str]:
    """Every layer a model exposes, in network order."""
    names = []
    for i in range(config.num_blocks):
        names += [f"blocks.{i}.mlp", f"blocks.{i}"]
    return names + ["final"]


def default_layer(config) -> str:
    """The layer `--layer` defaults to: the residual stream at DEFAULT_DEPTH of the network."""
    return f"blocks.{round(DEFAULT_DEPTH * (config.num_blocks - 1))}"


def _valid_layers_text(config) -> str:
    last = config.num_blocks - 1
    return (f"valid layers: blocks.0 .. blocks.{last} (residual stream after a block), blocks.0.mlp .. "
            f"blocks.{last}.mlp (MLP output before the residual add), final (after the final norm); Evo 2 "
            f"names blocks.N.mlp.l3, blocks-N and norm are accepted")


def resolve_layers(config, layers: str | Iterable[str] | None) -> list[str]:
    """Canonical layer names (duplicates dropped, order kept); None gives [default_layer(config)].
    Raises InputError listing the valid names for an unknown one."""
    if layers is None:
        return [default_layer(config)]
    if isinstance(layers, str):
        layers = [layers]
    out: list[str] = []
    for name in layers:
        canonical = _resolve_layer(config, str(name))
        if canonical not in out:
            out.append(canonical)
    if not out:
        raise InputError(f"no layer given; {_valid_layers_text(config)}")
    return out


def _resolve_layer(config, name: str) -> str:
    text = name.strip()
    if text in _FINAL_ALIASES:
        return "final"
    match = _LAYER_RE.match(text)
    if match:
        index = int(match[1])
        if index < 0:
            index += config.num_blocks
        if 0 <= index < config.num_blocks:
            return f"blocks.{index}" + (".mlp" if match[2] else "")
    raise InputError(f"unknown layer {name!r}; {_valid_layers_text(config)}")


def _blocks_needed(config, layers: list[str]) -> int:
    if "final" in layers:
        return config.num_blocks
    return 1 + max(int(name.split(".")[1]) for name in layers)


# --- records and results -----------------------------------------------------------------------------

@dataclass
class SeqInput:
    """One sequence to embed. `contig`/`start` place it on a reference (0-based); for a FASTA record the
    contig is the record's own name and start is 0."""

    name: str
    seq: bytes | str
    contig: str | None = None
    start: int = 0
    description: str = ""


@dataclass
class Embedding:
    """The embeddings of one record: `arrays[layer]` is (L, D) per token, (D,) pooled, or (W, D) per
    window of `stride` bases (window i covers [start + i*stride, start + min((i+1)*stride, L)))."""

    name: str
    length: int
    arrays: dict[str, Any]
    index: int = 0  # position in the input
    contig: str | None = None
    start: int = 0
    stride: int | None = None
    description: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.start + self.length


def _as_input(item: Any, index: int) -> SeqInput:
    if isinstance(item, SeqInput):
        return item
    if isinstance(item, (str, bytes, bytearray)):
        return SeqInput(f"seq{index}", bytes(item) if not isinstance(item, str) else item)
    if hasattr(item, "name") and hasattr(item, "seq"):  # pipelines.fasta.Record and the like
        return SeqInput(str(item.name), item.seq, contig=str(item.name),
                        description=str(getattr(item, "description", "") or ""))
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return SeqInput(str(item[0]), item[1], contig=str(item[0]))
    raise Evo2LiteError(f"cannot embed a {type(item).__name__}: pass str/bytes sequences, (name, sequence) "
                        "pairs, a dict name -> sequence or a Path to a FASTA file")


# --- the engine --------------------------------------------------------------------------------------

class Embedder:
    """Embeds records with one model and one set of options; see the module docstring.

    `batch_size` > 1 runs up to that many records no longer than `chunk_size` together (right-padded: a
    causal model's real positions never see the padding), and in window mode that many windows at once.
    """

    def __init__(self, model, layers: str | Iterable[str] | None = None, *, pool: str | None = None,
                 stride: int | None = None, rc_average: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 window_mode: bool = False, window_overlap: int | None = None, batch_size: int = 1,
                 out_dtype: str = "float32", tag: str = "") -> None:
        self.model = model
        if tag:  # a phylogenetic tag (evo2lite.tags) run before each strand / window; its outputs are dropped
            from ..tags import check_tag

            check_tag(tag, model)
        self.tag = tag
        self.tag_ids = encode(tag)
        self.config = model.config
        self.layers = resolve_layers(self.config, layers)
        self.num_blocks = _blocks_needed(self.config, self.layers)
        if pool in (None, "none", "token"):
            pool = None
        elif pool not in POOLS:
            raise InputError(f"--pool must be one of {', '.join(POOLS)} (or none for per-token), got {pool!r}")
        from ..options import check_options

        check_options(InputError, stride=stride, chunk_size=chunk_size, batch_size=batch_size,
                      window_overlap=window_overlap)
        if stride is not None:
            if pool is not None:
                raise InputError("--stride gives per-window means; it cannot be combined with --pool")
            stride = int(stride)
        if out_dtype not in _OUT_DTYPES:
            raise InputError(f"output dtype must be one of {', '.join(_OUT_DTYPES)}, got {out_dtype!r}")
        self.pool, self.stride, self.rc_average = pool, stride, bool(rc_average)
        self.chunk_size, self.batch_size = int(chunk_size), int(batch_size)
        self.window_mode = bool(window_mode)
        if self.window_mode:
            overlap = self.chunk_size // 2 if window_overlap is None else int(window_overlap)
            if not 0 <= overlap < self.chunk_size:
                raise InputError(f"--window-overlap must be in [0, chunk size {self.chunk_size}), got {overlap}")
            self.window_overlap = overlap
        else:
            self.window_overlap = None
        self.out_dtype = np.dtype(_OUT_DTYPES[out_dtype])
        self.mode = "token" if pool is None and stride is None else ("stride" if stride else pool)
        # set by embed_file: a folder for per-token / per-window rows too large for memory, and an
        # input_check.DnaCheck counting non-DNA bytes per record
        self.spill_dir: str | None = None
        self.dna_check = None

    @property
    def per_token(self) -> bool:
        return self.mode == "token"

    def metadata(self) -> dict:
        """What produced the embeddings: stored with every output file."""
        import evo2lite

        from .provenance import weights_digest

        return {"evo2lite_version": evo2lite.__version__, "torch_version": torch.__version__,
                "model": self.config.name or "", "model_source": str(getattr(self.model, "source", "")),
                "config": self.config.to_dict(), "dtype": str(self.model.dtype).replace("torch.", ""),
                "fp8": getattr(self.model, "provenance", {}).get("fp8", "off"),
                "weights": weights_digest(self.model),  # score/score-vcf's digest of the loaded weights
                "device": str(self.model.device), "layers": list(self.layers),
                "pool": self.pool or "none", "stride": self.stride or 0, "rc_average": self.rc_average,
                "mode": "window" if self.window_mode else "exact", "chunk_size": self.chunk_size,
                "window_overlap": self.window_overlap if self.window_mode else 0, "tag": self.tag,
                "out_dtype": self.out_dtype.name, "coordinates": "0-based half-open"}

    # -- running the model ---------------------------------------------------------------------------

    def _forward(self, ids_BL: torch.Tensor, state=None) -> dict[str, torch.Tensor]:
        """The requested layers for one chunk, running blocks 0 .. num_blocks-1 only; with a state, through
        the inference engine (K/V written in place into buffers reserved for the whole record, FIR tails
        compacted so the state keeps no chunk-sized tensors alive)."""
        from ..inference.engine import forward_chunk

        capture = dict.fromkeys(self.layers)
        if state is None:
            self.model.hidden_states(ids_BL, capture=capture, num_blocks=self.num_blocks)
        else:
            forward_chunk(self.model, ids_BL, state, logits="none", capture=capture, num_blocks=self.num_blocks)
        return capture

    def _check_kv_memory(self, rec: SeqInput, length: int) -> None:
        """Exact mode keeps every position's keys and values: refuse up front, with what to do instead,
        when they cannot fit in the free memory of the device (rather than die in the allocation)."""
        from ..inference.engine import state_nbytes

        cfg = self.config
        layout = cfg.layout[:self.num_blocks]
        if "A" not in layout:
            return
        kv = state_nbytes(cfg, 1, length, self.model.dtype)["kv"] * layout.count("A") // cfg.layout.count("A")
        free = _free_memory(self.model.device)
        if free is not None and kv > 0.8 * free:
            raise InputError(
                f"record {rec.name!r} ({length:,} bases) needs {kv / 2**30:,.1f} GiB of attention KV cache in "
                f"exact mode, more than the {free / 2**30:,.1f} GiB free on {self.model.device}; use "
                f"--window-mode (approximate, memory flat in the length) or embed a shorter region")

    @torch.inference_mode()
    def _chunks(self, rec: SeqInput, strand: Strand, progress) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
        """(start, {layer: (l, D)}) pieces covering [0, L) of one strand in order, for one long record.
        Token ids are made per chunk (or per group of windows), never for the whole record."""
        L = strand.length
        check = self.dna_check if not strand.reverse else None
        if not self.window_mode:
            self._check_kv_memory(rec, L)
            state = self.model.new_state(1)
            T = len(self.tag_ids)
            state.extra["kv_capacity"] = T + L  # one KV allocation per attention block, of the final size
            if T:
                self._forward(self.tag_ids[None], state)  # context only: its outputs are not kept
            for start in range(0, L, self.chunk_size):
                piece = strand.ids(start, min(L, start + self.chunk_size))
                if check is not None:
                    check.add(piece.numpy())
                out = self._forward(piece[None], state)
                if progress is not None:
                    progress(piece.shape[0])
                yield start, {name: t[0] for name, t in out.items()}
            return
        plan = window_plan(L, self.chunk_size, self.window_overlap)
        for i in range(0, len(plan), self.batch_size):
            group = plan[i:i + self.batch_size]
            ids_BL = torch.stack([strand.ids(w0, w1) for w0, w1, _, _ in group])
            if check is not None:
                for row, (w0, _, k0, k1) in enumerate(group):
                    check.add(ids_BL[row, k0 - w0:k1 - w0].numpy())
            T = len(self.tag_ids)
            out = self._forward(torch.cat([self.tag_ids.expand(len(group), T), ids_BL], 1) if T else ids_BL)
            if progress is not None:
                progress(sum(k1 - k0 for _, _, k0, k1 in group))
            for row, (w0, _, k0, k1) in enumerate(group):
                yield k0, {name: t[row, T + k0 - w0:T + k1 - w0] for name, t in out.items()}

    def _reducers(self, rec: SeqInput, index: int, length: int, target_factory) -> dict[str, Reducer]:
        reducers = {}
        for name in self.layers:
            target = None
            if self.per_token and target_factory is not None:
                target = target_factory(index, rec, name, (length, self.config.d_model), self.out_dtype)
            reducers[name] = Reducer(self.mode, length, self.config.d_model, stride=self.stride,
                                     rc=self.rc_average, out_dtype=self.out_dtype, device=self.model.device,
                                     target=target, spill_dir=self.spill_dir)
        return reducers

    def _strands(self, rec: SeqInput) -> list[Strand]:
        if len(rec.seq) == 0:
            raise InputError(f"record {rec.name!r} is empty (0 bases); remove it from the input")
        return [Strand(rec.seq, False)] + ([Strand(rec.seq, True)] if self.rc_average else [])

    def _finish(self, rec: SeqInput, index: int, length: int, reducers: dict[str, Reducer]) -> Embedding:
        if self.dna_check is not None:
            self.dna_check.end_record()
        return Embedding(name=rec.name, length=length, index=index,
                         arrays={name: r.result() for name, r in reducers.items()},
                         contig=rec.contig, start=int(rec.start), stride=self.stride,
                         description=rec.description)

    @torch.inference_mode()
    def embed_one(self, rec: SeqInput, *, index: int = 0, target_factory=None, progress=None) -> Embedding:
        """Embed one record, streaming it chunk by chunk (exact) or window by window."""
        strands = self._strands(rec)
        length = strands[0].length
        reducers = self._reducers(rec, index, length, target_factory)
        for strand in strands:
            for start, pieces in self._chunks(rec, strand, progress):
                for name, x_lD in pieces.items():
                    reducers[name].add(start, x_lD, strand.reverse)
        return self._finish(rec, index, length, reducers)

    @torch.inference_mode()
    def _embed_batch(self, batch: list[tuple[int, SeqInput]], target_factory, progress) -> list[Embedding]:
        """Records no longer than chunk_size, in one padded forward pass per strand."""
        recs = [rec for _, rec in batch]
        strands = [self._strands(rec) for rec in recs]
        lengths = [s[0].length for s in strands]
        reducers = [self._reducers(rec, i, n, target_factory) for (i, rec), n in zip(batch, lengths)]
        forward_ids = []
        T = len(self.tag_ids)
        for which in range(len(strands[0])):
            ids_BL = torch.full((len(recs), T + max(lengths)), PAD_ID, dtype=torch.long)
            ids_BL[:, :T] = self.tag_ids
            for row, s in enumerate(strands):
                ids_BL[row, T:T + lengths[row]] = s[which].ids(0, lengths[row])
            if which == 0:
                forward_ids = [ids_BL[row, T:T + n].numpy() for row, n in enumerate(lengths)]
            out = self._forward(ids_BL)
            for row, n in enumerate(lengths):
                for name, t in out.items():
                    reducers[row][name].add(0, t[row, T:T + n], which == 1)
            if progress is not None:
                progress(sum(lengths))
        done = []
        for (i, rec), n, r, ids in zip(batch, lengths, reducers, forward_ids):
            if self.dna_check is not None:
                self.dna_check.add(ids)
            done.append(self._finish(rec, i, n, r))
        return done

    def iter_embed(self, records: Iterable[Any], *, target_factory: Callable | None = None,
                   progress: Callable[[int], None] | None = None) -> Iterator[Embedding]:
        """Embed records lazily, in input order. `progress(n)` is called with the bases just processed
        (both strands count with rc_average). `target_factory(index, rec, layer, shape, dtype)` may supply
        the array-like (e.g. an HDF5 dataset) that per-token embeddings are written into, chunk by chunk."""
        pending: list[tuple[int, SeqInput]] = []
        for index, item in enumerate(records):
            rec = _as_input(item, index)
            short = self.batch_size > 1 and not self.window_mode and 0 < len(rec.seq) <= self.chunk_size
            if short:
                pending.append((index, rec))
                if len(pending) == self.batch_size:
                    yield from self._embed_batch(pending, target_factory, progress)
                    pending = []
                continue
            if pending:
                yield from self._embed_batch(pending, target_factory, progress)
                pending = []
            yield self.embed_one(rec, index=index, target_factory=target_factory, progress=progress)
        if pending:
            yield from self._embed_batch(pending, target_factory, progress)


def _free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on `device` (MemAvailable on Linux for the CPU), or None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def window_plan(length: int, window: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Window mode's (window_start, window_end, keep_start, keep_end): the kept ranges tile [0, length);
    every kept token has at least `overlap` tokens of left context inside its window (or all of them).
    Every window is exactly `window` long when length > window (the last one is aligned to the end)."""
    if length <= window:
        return [(0, length, 0, length)]
    plan = [(0, window, 0, window)]
    kept = window
    while kept < length:
        start = min(kept - overlap, length - window)
        plan.append((start, start + window, kept, start + window))
        kept = start + window
    return plan


# --- the Python API ----------------------------------------------------------------------------------

def _load(model, device, dtype, config=None, fp8=None, allow_inexact=None):
    """A loaded model, or load_model(spec) on `device` (default: CUDA when available)."""
    from ..model import StripedHyena2

    if isinstance(model, StripedHyena2):
        return model
    from ..checkpoint import load_model

    from ..options import resolve_device

    return load_model(model, config=config, device=resolve_device(device), dtype=dtype, fp8=fp8,
                      allow_inexact=allow_inexact)


def embed(model, sequences, *, layers: str | Iterable[str] | None = None, pool: str | None = None,
          stride: int | None = None, rc_average: bool = False, chunk_size: int = DEFAULT_CHUNK_SIZE,
          window_mode: bool = False, window_overlap: int | None = None, batch_size: int = 1,
          out_dtype: str = "float32", device: str | None = None, dtype: str | None = None,
          iterator: bool = False, progress: Callable[[int], None] | None = None, tag: str = ""):
    """Embeddings of DNA sequences as numpy arrays (see the module docstring for layers and pooling).

    model: a loaded StripedHyena2, or a spec for `load_model` (None: the shipped model; then `device`,
      default CUDA when available, and `dtype` apply).
    sequences: one sequence (str or bytes), or several: a list of sequences or (name, sequence) pairs, a
      dict name -> sequence, an iterable of records, or a Path to a FASTA/GenBank file.
    Returns, for one sequence, its array (L, D) / (D,) / (W, D), or {layer: array} when several layers
    are asked; for several, a list of those in input order. With iterator=True, a lazy iterator of
    Embedding objects (name, coordinates, arrays), any input. tag: an Evo 2 phylogenetic tag
    (evo2lite.tags) run before each record (each strand, each window) as context; no output row is the
    tag's: the arrays cover the record's positions only.
    """
    net = _load(model, device, dtype)
    embedder = Embedder(net, layers, pool=pool, stride=stride, rc_average=rc_average, chunk_size=chunk_size,
                        window_mode=window_mode, window_overlap=window_overlap, batch_size=batch_size,
                        out_dtype=out_dtype, tag=tag)
    single = isinstance(sequences, (str, bytes, bytearray))
    if single:
        records: Iterable[Any] = [sequences]
    elif isinstance(sequences, Path):
        from ..pipelines.fasta import read_sequences

        records = read_sequences(sequences)
    elif isinstance(sequences, dict):
        records = list(sequences.items())
    else:
        records = sequences
    results = embedder.iter_embed(records, progress=progress)
    if iterator:
        return results

    def unpack(e: Embedding):
        return e.arrays[embedder.layers[0]] if len(embedder.layers) == 1 else e.arrays

    out = [unpack(e) for e in results]
    return out[0] if single else out
