"""Whole-sequence inference under context parallelism behind the single-device call surface: every rank
passes the same full ids (B, L), each runs its zigzag shard, and every rank gets the full outputs back.
The apps (score, embed) use it unchanged; rank 0 writes their outputs, the other ranks follow the same
forward passes and write nothing.

Legend: B batch, L length, l padded shard length, V vocabulary, D d_model.
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import torch
import torch.nn.functional as F

from ..model import StripedHyena2
from ..tokenizer import PAD_ID
from .context import apply_context_parallel
from .zigzag import ContextParallelError, gather_sequence, shard_sequence


class ContextParallelStripedHyena2(StripedHyena2):
    """The same modules and parameters as the model it was made from (`context_parallel_model`), with
    forward and hidden_states taking full sequences: right-padded with PAD to a length the zigzag split
    serves (a multiple of 2N, chunks no shorter than the longest FIR halo; a causal model's outputs at
    the real positions never see the padding), sharded, run, gathered. A fresh inference state is accepted
    (and left empty, so it cannot be continued): the apps' streaming loop then runs one pass per record."""

    def _cp_shard(self, ids_BL: torch.Tensor, state) -> torch.Tensor:
        if state is not None:  # a fresh state (the apps' streaming loop): one pass, which it cannot continue
            if state.position != 0:
                raise ContextParallelError("context-parallel inference runs each sequence in one pass; it "
                                           "cannot continue an inference state")
            state.position += ids_BL.shape[1]
        cp, cfg = self._context_parallel.cp, self.config
        L, n2 = ids_BL.shape[1], 2 * cp.size
        min_chunk = max(cfg.featurizer_len, cfg.se_filter_len, cfg.mr_filter_len) - 1
        padded = max(-(-L // n2), min_chunk, 1) * n2
        ids_BL = F.pad(ids_BL.to(self.device), (0, padded - L), value=PAD_ID)
        return shard_sequence(ids_BL, cp.size, cp.rank)

    def _cp_gather(self, x_BlX: torch.Tensor, L: int) -> torch.Tensor:
        return gather_sequence(x_BlX, self._context_parallel.cp.group)[:, :L]

    def hidden_states(self, ids_BL, state=None, capture=None, num_blocks=None, attention_step=None):
        if not self._context_parallel.enabled:
            return super().hidden_states(ids_BL, state, capture, num_blocks, attention_step)
        L = ids_BL.shape[1]
        local = dict.fromkeys(capture) if capture is not None else None
        ids_Bl = self._cp_shard(ids_BL, state)
        x_BlD = super().hidden_states(ids_Bl, capture=local, num_blocks=num_blocks)
        if capture is not None:
            for name, t in local.items():
                capture[name] = self._cp_gather(t, L) if t is not None else None
        return self._cp_gather(x_BlD, L)

    def forward(self, ids_BL, state=None):
        """Logits (B, L, V) on every rank (gathered as logits: V = 512 is narrower than D)."""
        if not self._context_parallel.enabled:
            return super().forward(ids_BL, state)
        x_BlD = super().hidden_states(self._cp_shard(ids_BL, state))
        return self._cp_gather(F.linear(x_BlD, self.embedding.weight), ids_BL.shape[1])


def context_parallel_model(model: StripedHyena2, mesh_or_group=None, **schemes) -> ContextParallelStripedHyena2:
    """apply_context_parallel(model, ...) and a view of it that takes full sequences (see the class)."""
    apply_context_parallel(model, mesh_or_group, **schemes)
    view = copy.copy(model)  # shares the submodules and parameters
    view.__class__ = ContextParallelStripedHyena2
    return view


class _Discard:
    """A per-token output target that keeps nothing (ranks other than 0 in `embed_file_follower`)."""

    def __init__(self, dtype) -> None:
        self.dtype = np.dtype(dtype)

    def __setitem__(self, key, value) -> None:
        pass

    def __getitem__(self, key):
        return 0.0


def embed_file_follower(input, *, model, regions=(), regions_files=(), layers=None, pool=None, stride=None,
                        rc_average=False, chunk_size=None, batch_size=1, out_dtype="float32", **_ignored) -> None:
    """What a rank other than 0 runs while rank 0 runs `embed_file` with the same arguments: the same
    records in the same order through the same Embedder, hence the same collective forward passes, with
    every output discarded."""
    from ..apps.embed import DEFAULT_CHUNK_SIZE, Embedder
    from ..apps.embed_io import read_inputs
    from ..io import input_path

    use_regions = bool(regions or regions_files)
    with input_path(input) if not use_regions else contextlib.nullcontext(input) as path:
        records, _ = read_inputs(path, regions, regions_files)
        embedder = Embedder(model, layers, pool=pool, stride=stride, rc_average=rc_average,
                            chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                            batch_size=batch_size, out_dtype=out_dtype)

        def discard(index, rec, layer, shape, dtype):
            return _Discard(dtype)

        for _ in embedder.iter_embed(records, target_factory=discard):
            pass



def embed_file_context_parallel(context_parallel: int, input, output, *, model=None, config=None, device=None,
                                dtype=None, fp8=None, allow_inexact=None, window_mode: bool = False,
                                chunk_size=None, progress=None, force: bool = False, **kwargs):
    """`evo2lite embed ... --context-parallel N` under torchrun: every record in one exact pass split over
    the N ranks (chunk_size does not apply); rank 0 writes `output` and returns embed_file's summary, the
    other ranks return None."""
    from ..apps.embed_io import embed_file
    from ..checkpoint import load_model
    from ..io import check_output
    from .dist import init_distributed, peer_failure_guard

    if window_mode:
        raise ContextParallelError("--window-mode and --context-parallel exclude each other: context "
                                   "parallelism embeds every record exactly, in one pass")
    if str(input) == "-":
        raise ContextParallelError("--context-parallel reads INPUT on every rank: give a file, not stdin")
    check_output(output, force)  # on every rank, so no rank starts alone
    d, dev = init_distributed(device, context_parallel=context_parallel, whole_job=True)
    whole = 1 << 62  # larger than any record: each goes through one (sharded) forward pass
    with peer_failure_guard(d.timeout_s):
        net = context_parallel_model(load_model(model, config=config, device=str(dev), dtype=dtype, fp8=fp8,
                                                allow_inexact=allow_inexact), d.cp_group)
        if d.main:
            return embed_file(input, output, model=net, chunk_size=whole, progress=progress, force=force,
                              **kwargs)
        embed_file_follower(input, model=net, chunk_size=whole, **kwargs)
    return None
