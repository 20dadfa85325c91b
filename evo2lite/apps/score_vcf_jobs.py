"""score-vcf, the model part: REF/ALT windows of a site -> jobs (a shared prefix and suffixes) -> deltas.

Causality makes most of the work shared. The terms at positions before the first base where an ALT window
differs from the REF window are the same for both, so per site the model runs the bases before the
variant once, copies the recurrent state and KV cache to one row per window (``state.select``), and runs
only the suffixes of REF and of every ALT. The first suffix term is read from the prefix's last logits.
Summing the suffix terms of the first L_alt positions gives the exact delta (prefix terms cancel); the
mean divides that delta by L_alt - 1. With ``strand="both"`` the reverse complement shares what follows
the variant (SNVs, MNVs); an indel's reverse-complemented windows differ almost from their first base,
so they run whole.

Legend: B batch, L length, V vocabulary, J prefixes in a chunk, R rows (windows) in a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..inference.engine import DEFAULT_CHUNK_LEN, prefill
from ..pipelines.windows import reverse_complement
from ..tokenizer import encode, encode_batch
from .score import chunked_token_logprobs

__all__ = ["Job", "make_job", "run_jobs", "deltas", "site_delta", "site_jobs"]


@dataclass
class Job:
    """Windows that share ``prefix``; ``suffixes[0]`` completes the REF window, the rest the ALT windows."""

    prefix: str
    suffixes: list[str]


def common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def make_job(ref_window: str, alt_windows: list[str], cap: int) -> Job:
    """Split REF and ALT windows (ALT windows may be shorter) after a prefix all of them share.

    ``cap`` is where the variant starts in these windows: the prefix is exactly ``cap`` long when all
    windows agree that far (always, forward), else empty (e.g. the reverse complement of an indel, whose
    windows differ all the way through the shifted flank). Any prefix length up to the common prefix is
    exact; using the same one for nearly every site lets prefixes of different sites share batches.
    """
    shared = min(common_prefix_len(ref_window, alt) for alt in alt_windows)
    p = cap if shared >= cap else 0
    # Keep at least one suffix token in every row, so each row's first scored term has a home.
    p = max(0, min(p, min(len(alt) for alt in alt_windows) - 1, len(ref_window) - 1))
    return Job(ref_window[:p], [w[p:] for w in [ref_window, *alt_windows]])


@torch.inference_mode()
def run_chunk(model, jobs: list[Job], p: int, rows: list[tuple[int, int]], out: list[list],
              chunk_len: int = DEFAULT_CHUNK_LEN, tag: str = "") -> None:
    """Run the rows (job, suffix) of one chunk, all with prefixes of length ``p``; fill ``out`` with each
    row's log-prob terms for window positions p, p+1, ... (the term of position 0 is 0: unscored).
    ``tag`` (a phylogenetic tag) runs before every window as context only: it shifts no position and
    adds no term, and the window's first base stays unscored, so a score with a tag sums the same terms."""
    device = model.device
    job_ids = list(dict.fromkeys(j for j, _ in rows))
    slot = {j: k for k, j in enumerate(job_ids)}
    row_slot = torch.tensor([slot[j] for j, _ in rows], dtype=torch.long)
    ids_RL, lengths = encode_batch([jobs[j].suffixes[r] for j, r in rows])
    if p > 0 or tag:
        prefix_JP = torch.stack([encode(tag + jobs[j].prefix) for j in job_ids]).to(device)
        # the prefix needs only its state and its last position's logits; both halves stream in chunks,
        # so any window up to the trained context runs in memory bounded by the chunk (plus the KV cache)
        last_JV, state = prefill(model, prefix_JP, chunk_len=chunk_len)
        last_JV = torch.log_softmax(last_JV.float(), dim=-1)
        first_R = (last_JV[row_slot.to(device), ids_RL[:, 0].to(device)].double().cpu().numpy() if p > 0
                   else np.zeros(len(rows)))
        terms_RL = chunked_token_logprobs(model, ids_RL, state.select(row_slot), chunk_len=chunk_len)
    else:
        first_R = np.zeros(len(rows))
        terms_RL = chunked_token_logprobs(model, ids_RL, chunk_len=chunk_len)
    terms_RL = terms_RL.double().cpu().numpy()
    for k, (j, r) in enumerate(rows):
        n = int(lengths[k])
        terms = np.empty(n)
        terms[0] = first_R[k]
        terms[1:] = terms_RL[k, : n - 1]
        out[j][r] = terms


def run_jobs(model, jobs: list[Job], batch_size: int, tag: str = "") -> list[list[np.ndarray]]:
    """Per job, per row, the log-prob terms of the window positions from len(prefix) on (``tag``:
    run_chunk)."""
    out: list[list] = [[None] * len(job.suffixes) for job in jobs]
    by_prefix_len: dict[int, list[tuple[int, int]]] = {}
    for j, job in enumerate(jobs):
        by_prefix_len.setdefault(len(job.prefix), []).extend((j, r) for r in range(len(job.suffixes)))
    for p, rows in by_prefix_len.items():  # insertion order: deterministic batches
        for i in range(0, len(rows), batch_size):
            run_chunk(model, jobs, p, rows[i: i + batch_size], out, tag=tag)
    return out


def deltas(job: Job, terms: list[np.ndarray], alt_lengths: list[int], reduce: str) -> list[float]:
    """ALT - REF log-likelihood for each ALT window (length alt_lengths[i]); REF terms are cut to match."""
    p = len(job.prefix)
    ref_cum = np.concatenate([[0.0], np.cumsum(terms[0])])
    out = []
    for alt_terms, length in zip(terms[1:], alt_lengths):
        delta = float(alt_terms.sum() - ref_cum[length - p])
        if reduce == "mean":
            delta = delta / (length - 1) if length > 1 else 0.0
        out.append(delta)
    return out


def site_delta(job: Job, terms: list[np.ndarray], at: int) -> list[float]:
    """Per ALT row, log P(ALT base) - log P(REF base) at window position ``at`` given the bases before it
    (GPN's site score of an SNV): the row's first differing term, so it comes with the window's terms.
    NaN at ``at = 0`` (a window's first base has no context)."""
    i = at - len(job.prefix)
    if at <= 0 or i < 0:
        return [float("nan")] * (len(terms) - 1)
    return [float(alt[i] - terms[0][i]) for alt in terms[1:]]


def site_jobs(ref_window: str, alt_windows: list[str], offset: int, ref_len: int,
               strand: str) -> list[tuple[Job, list[int], list[int]]]:
    """(job, which ALTs, their window lengths) for one site whose variants start at ``offset`` in the
    windows, with REF alleles up to ``ref_len`` long: the forward job (strand forward or both), and for
    strand both or reverse one reverse-complement job per distinct ALT window length (the RC of a
    shortened window starts elsewhere)."""
    lengths = [len(a) for a in alt_windows]
    jobs = []
    if strand != "reverse":
        jobs.append((make_job(ref_window, alt_windows, offset), list(range(len(alt_windows))), lengths))
    if strand in ("both", "reverse"):
        by_len: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            by_len.setdefault(length, []).append(i)
        for length, members in by_len.items():
            job = make_job(reverse_complement(ref_window[:length]),
                            [reverse_complement(alt_windows[i]) for i in members], max(0, length - offset - ref_len))
            jobs.append((job, members, [length] * len(members)))
    return jobs
