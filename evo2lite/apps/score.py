"""Sequence scoring: per-sequence log-likelihood over the L-1 next-token log-probs (natural log).

Batches are right-padded; a causal model's logits at real positions never see the padding, and padded
positions are masked out, so a sequence scores the same alone or in any batch (unlike evo2's scorer,
which adds one log P(pad | sequence) term, spec §7).

Records longer than the context W are scored with sliding windows: the first window [0, W) scores
positions 1..W-1; each later window ends at most W/2 past the last scored position and starts W bases
before its end, so every position is scored exactly once, with at least W/2 bases of left context.

Legend: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..inference.engine import DEFAULT_CHUNK_LEN, forward_chunk
from ..log import warn
from ..tokenizer import PAD_ID, encode


@dataclass
class SequenceScore:
    name: str
    length: int
    sum_logprob: float
    mean_logprob: float
    per_position: np.ndarray  # (length,) log P(x_i | x_<i); NaN at i = 0 (unscored)


def token_logprobs(logits_BLV: torch.Tensor, ids_BL: torch.Tensor) -> torch.Tensor:
    """log P(ids[:, t+1] | ids[:, :t+1]) for t < L-1: (B, L-1), fp32."""
    logp = torch.log_softmax(logits_BLV[:, :-1].float(), dim=-1)
    return logp.gather(-1, ids_BL[:, 1:, None].to(logp.device)).squeeze(-1)


@torch.inference_mode()
def chunked_token_logprobs(model, ids_BL: torch.Tensor, state=None, *,
                           chunk_len: int = DEFAULT_CHUNK_LEN) -> torch.Tensor:
    """token_logprobs(model(ids_BL, state), ids_BL), streamed through the engine `chunk_len` positions at a
    time: activations and logits never exceed a chunk, whatever L (the recurrent state and the KV cache
    carry the sequence exactly). `state` continues an earlier prefix; a fresh one otherwise."""
    B, L = ids_BL.shape
    state = model.new_state(B) if state is None else state
    # one KV allocation for the whole window, no regrowth
    state.extra["kv_capacity"] = max(state.extra.get("kv_capacity") or 0, state.position + L)
    ids_BL = ids_BL.to(model.device)
    out_BL = torch.empty(B, max(L - 1, 0), dtype=torch.float32, device=model.device)
    for a in range(0, L, chunk_len):
        b = min(L, a + chunk_len)
        logits_BCV = forward_chunk(model, ids_BL[:, a:b], state, logits="all")
        # position t predicts t+1: a chunk's last position scores the next chunk's first token
        n = min(b, L - 1) - a
        if n > 0:
            logp_BCV = torch.log_softmax(logits_BCV[:, :n].float(), dim=-1)
            out_BL[:, a:a + n] = logp_BCV.gather(-1, ids_BL[:, a + 1:a + 1 + n, None]).squeeze(-1)
    return out_BL


def sliding_windows(length: int, context: int) -> list[tuple[int, int, int]]:
    """(start, end, first_scored) windows covering positions 1..length-1 once each (module docstring)."""
    if length < 2:
        return []
    if length <= context:
        return [(0, length, 1)]
    half = max(1, context // 2)
    windows = [(0, context, 1)]
    scored_until = context
    while scored_until < length:
        end = min(scored_until + half, length)
        windows.append((end - context, end, scored_until))
        scored_until = end
    return windows


@torch.inference_mode()
def score_sequences(model, sequences, *, batch_size: int = 8, context: int | None = None,
                    progress=None, chunk_len: int = DEFAULT_CHUNK_LEN, tag: str = "") -> list[SequenceScore]:
    """Score (name, sequence) records (sequence: str or bytes). `context` defaults to min(the model's
    trained context, 8192) (evo2lite.loading.scoring_window); each window streams through the inference
    engine in chunks of `chunk_len`. Records shorter than 2 bases get NaN and a warning. `tag` (an Evo 2
    phylogenetic tag, evo2lite.tags) runs before every window as context only: the same positions are
    scored (the record's first base stays unscored) and none of the tag's tokens is."""
    from ..options import check_options

    from ..loading import scoring_window

    check_options(batch_size=batch_size, context=context)
    context = scoring_window(model, context, "--context")
    if getattr(model, "_context_parallel", None) is not None:
        chunk_len = max(chunk_len, context)  # context parallelism splits a window across ranks in one pass
    records = [(name, encode(seq)) for name, seq in sequences]
    tag_ids = encode(tag)
    T = len(tag_ids)
    per_position = [np.full(len(ids), np.nan) for _, ids in records]
    jobs = [(r, start, end, first) for r, (_, ids) in enumerate(records)
            for start, end, first in sliding_windows(len(ids), context)]
    jobs.sort(key=lambda job: job[2] - job[1])  # similar lengths together: less padding
    for i in range(0, len(jobs), batch_size):
        batch = jobs[i: i + batch_size]
        width = max(end - start for _, start, end, _ in batch)
        ids_BL = torch.full((len(batch), T + width), PAD_ID, dtype=torch.long)
        ids_BL[:, :T] = tag_ids
        for row, (r, start, end, _) in enumerate(batch):
            ids_BL[row, T: T + end - start] = records[r][1][start:end]
        logp = chunked_token_logprobs(model, ids_BL, chunk_len=chunk_len).double().cpu().numpy()
        for row, (r, start, end, first) in enumerate(batch):
            # logp[row, t] scores absolute position start + t + 1 - T
            per_position[r][first:end] = logp[row, T + first - start - 1: T + end - start - 1]
        if progress is not None:
            progress(sum(end - first for _, _, end, first in batch))
    results = []
    for (name, ids), values in zip(records, per_position):
        if len(ids) < 2:
            warn(f"record {name!r} is shorter than 2 bases: its score is NaN")
            total = mean = math.nan
        else:
            total = float(np.sum(values[1:]))
            mean = total / (len(ids) - 1)
        results.append(SequenceScore(name, len(ids), total, mean, values))
    return results


def write_score_table(results: list[SequenceScore], out, meta: dict[str, str] | None = None) -> None:
    """TSV, one row per record; `meta` (evo2lite.apps.provenance.run_provenance) first as `#evo2lite_KEY=VALUE`
    lines, as score-vcf's table (pandas: read_csv(path, sep="\\t", comment="#"))."""
    if meta:
        from .provenance import comment_lines

        out.writelines(comment_lines(meta))
    out.write("name\tlength\tsum_logprob\tmean_logprob\n")
    for r in results:
        out.write(f"{r.name}\t{r.length}\t{r.sum_logprob:.6f}\t{r.mean_logprob:.6f}\n")


def write_per_position(results: list[SequenceScore], path: Path, meta: dict[str, str] | None = None) -> None:
    """bedGraph (chrom = record name, 0-based half-open base, log-prob) or .npz (one array per record).
    `meta` (the run's provenance): `#evo2lite_KEY=VALUE` comment lines after the bedGraph track line, or
    a `__metadata__` JSON string in the npz (as embed's npz)."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        if path.suffix == ".npz":
            extra = {"__metadata__": np.array(json.dumps(meta))} if meta else {}
            np.savez_compressed(tmp, **{f"{i}:{r.name}": r.per_position for i, r in enumerate(results)}, **extra)
            return
        with open(tmp, "w") as out:
            out.write('track type=bedGraph name="evo2lite log-prob" description="natural log"\n')
            if meta:
                from .provenance import comment_lines

                out.writelines(comment_lines(meta))
            for r in results:
                for pos in range(1, r.length):
                    out.write(f"{r.name}\t{pos}\t{pos + 1}\t{r.per_position[pos]:.6f}\n")
