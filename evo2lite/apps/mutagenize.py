"""In-silico saturation mutagenesis: every SNV of a region, scored as score-vcf scores a VCF of them.

For a position s the score is score-vcf's window score: the window [s - W//2, s - W//2 + W) clipped to the
contig, delta = log-likelihood(ALT window) - log-likelihood(REF window); only the terms from s on differ,
so delta = sum over t in [s, window end) of alt_t - ref_t. Beside it, ``site`` is the GPN-style
log P(ALT) - log P(REF) at s given the bases before it: the first of those terms, so it costs nothing.

Work is shared in tiles of ``tile`` consecutive positions (score_vcf_jobs.Job): one prefix (the stream from
the window start of the tile's first position up to the tile) runs once, its state is copied to every row,
and the rows are the tile's reference (its per-position log-probs, once) and one row per ALT, which runs
from the tile start through the ALT to the window end of its position.

When it equals score-vcf (tests/unit/test_mutagenize.py checks 1e-5): with ``tile=1`` (the default) the
rows are exactly score-vcf's jobs, so every score does. With ``tile > 1`` a position s after the tile's
first one a sees the bases from a - W//2 (up to tile-1 more on the left than its own window): its score
equals score-vcf's for s = a and wherever the window is clipped by the contig start (s <= W//2), and is an
approximation elsewhere. ``downstream=D`` sums only the terms of [s, s + D] (and runs ALT rows only that
far): cheaper, also an approximation. benchmarks/mutagenize.py measures speed and agreement of both.
``mode="site"`` computes only the site score, from the log-probs of all four bases along one reference
pass per tile. On the reverse strand everything runs on the reverse complement of the contig, with the
window mirrored (the variant W - W//2 - 1 bases in), which is score-vcf's reverse-complement window.

Legend: W window, T tile, D downstream bases.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import Evo2LiteError
from ..pipelines import regions as R
from ..pipelines import vcf as V
from ..pipelines.windows import reverse_complement
from . import score_vcf_jobs as jobs

__all__ = ["mutagenize", "Mutation", "COLUMNS", "write_table"]

COLUMNS = ("#chrom", "pos", "ref", "alt", "score", "site", "status", "strand")
_ACGT = "ACGT"
_TOKEN = {base: ord(base) for base in _ACGT}  # byte-level tokenizer: a base's token is its byte
_TILES_PER_RUN = 8  # tiles handed to run_jobs at once: fuller batches, bounded memory


@dataclass
class Mutation:
    """One row: ``pos`` 1-based; ``score`` (window delta) and ``site`` NaN unless status is "ok"."""

    chrom: str
    pos: int
    ref: str
    alt: str
    score: float
    site: float
    status: str
    strand: str = "+"  # the strand scored: "-" = on the reverse complement (ref and alt stay forward)


def _validate(window, tile, downstream, reduce, batch_size, threads, out) -> None:
    from ..options import check_options
    from .score_vcf import MIN_WINDOW

    check_options(batch_size=batch_size, threads=threads)
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < MIN_WINDOW):
        raise Evo2LiteError(f"--window must be an integer >= {MIN_WINDOW}, got {window!r}")
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise Evo2LiteError(f"--tile must be a positive integer, got {tile!r}")
    if downstream is not None and (isinstance(downstream, bool) or not isinstance(downstream, int)
                                   or downstream < 0):
        raise Evo2LiteError(f"--downstream must be an integer >= 0, got {downstream!r}")
    if reduce not in ("sum", "mean"):
        raise Evo2LiteError(f"--reduce must be sum or mean, got {reduce!r}")
    if out is not None and not str(out).endswith((".tsv", ".tsv.gz", ".tsv.bgz")):
        raise Evo2LiteError(f"-o {out}: the table must end in .tsv.gz or .tsv.bgz (bgzip + tabix index) or .tsv")


class _Plan:
    """One tile's job and where each of its rows' scores go."""

    def __init__(self, seq: str, ls: int, a: int, b: int, contig_len: int, window: int, left: int,
                 downstream: int | None, chrom: str, strand: str, rows: list[Mutation]):
        self.a, self.rows, self.keys = a, rows, []  # keys: (row index, s, end of the summed span, window length)
        end = lambda s: min(contig_len, s - left + window)  # noqa: E731  (a position's window end)
        # on "-", s counts from the contig's end on the reverse complement; rows are reported forward
        out = (lambda s, x: (s + 1, x)) if strand == "+" else (lambda s, x: (contig_len - s, reverse_complement(x)))
        ref_row = seq[a - ls: end(b - 1) - ls]
        suffixes = [ref_row]
        for s in range(a, b):
            base = seq[s - ls]
            if base not in _ACGT:
                status = V.STATUS_N_AT_VARIANT if base == "N" else V.STATUS_IUPAC
                pos, fwd = out(s, base)
                rows.extend(Mutation(chrom, pos, fwd, alt, math.nan, math.nan, status, strand) for alt in _ACGT)
                continue
            # the context the rows see: the tile's stream start to this position's window end
            status = V.window_status(seq[: end(s) - ls])
            stop = end(s) if downstream is None else min(end(s), s + downstream + 1)
            for alt in _ACGT:
                if alt == base:
                    continue
                if status == V.STATUS_OK:
                    self.keys.append((len(rows), s, stop, end(s) - max(0, s - left)))
                    suffixes.append(seq[a - ls: s - ls] + alt + seq[s - ls + 1: stop - ls])
                (pos, fwd), (_, fwd_alt) = out(s, base), out(s, alt)
                rows.append(Mutation(chrom, pos, fwd, fwd_alt, math.nan, math.nan, status, strand))
        self.job = jobs.Job(seq[: a - ls], suffixes) if self.keys else None
        # site mode: the reference stream's log-probs of every base at a..b-1
        self.site_prefix, self.site_row = seq[: a - ls], seq[a - ls: b - 1 - ls]

    def fill(self, terms: list[np.ndarray], reduce: str) -> None:
        """Scores from the run's terms (terms[r][i]: window position a + i of row r; row 0 the reference)."""
        ref = terms[0]
        for (index, s, stop, length), alt in zip(self.keys, terms[1:]):
            i, n = s - self.a, stop - self.a
            delta = float(alt[i:n].sum() - ref[i:n].sum())
            if reduce == "mean":
                delta = delta / (length - 1) if length > 1 else 0.0
            row = self.rows[index]
            row.score = delta
            # the window's first base has no context: its term is 0 for both rows (unscored)
            row.site = float(alt[i] - ref[i]) if s > 0 else math.nan

    def fill_sites(self, logp_TV) -> None:
        """Site mode: site from the reference stream's log-probs (logp_TV[t]: position a + t); no window score."""
        for index, s, _, _ in self.keys:
            row = self.rows[index]
            lp = logp_TV[s - self.a]
            alt, ref = (row.alt, row.ref) if row.strand == "+" else map(reverse_complement, (row.alt, row.ref))
            row.site = float(lp[_TOKEN[alt]] - lp[_TOKEN[ref]]) if s > 0 else math.nan


@torch.inference_mode()
def _run_shared(model, job: jobs.Job, batch_size: int) -> list[np.ndarray]:
    """run_jobs for one job: the same terms, but the prefix runs once, not once per batch of rows."""
    from ..inference.engine import prefill
    from ..tokenizer import encode, encode_batch
    from .score import chunked_token_logprobs

    if not job.prefix:
        return jobs.run_jobs(model, [job], batch_size)[0]
    last_V, state = prefill(model, encode(job.prefix)[None].to(model.device))
    last_V = torch.log_softmax(last_V[0].float(), dim=-1)
    out = []
    for i in range(0, len(job.suffixes), batch_size):
        ids_RL, lengths = encode_batch(job.suffixes[i: i + batch_size])
        first_R = last_V[ids_RL[:, 0].to(model.device)].double().cpu().numpy()
        rows = state.select(torch.zeros(len(ids_RL), dtype=torch.long))
        terms_RL = chunked_token_logprobs(model, ids_RL, rows).double().cpu().numpy()
        for k, n in enumerate(int(n) for n in lengths):
            out.append(np.concatenate([first_R[k: k + 1], terms_RL[k, : n - 1]]))
    return out


@torch.inference_mode()
def _site_logprobs(model, prefix: str, row: str) -> np.ndarray:
    """(len(row) + 1, V) log-probs of the bases after ``prefix``, ``prefix + row[:1]``, ...; row 0 is NaN
    without a prefix (the contig's first base has no context)."""
    from ..inference.engine import DEFAULT_CHUNK_LEN, forward_chunk, prefill
    from ..tokenizer import encode

    parts = []
    if prefix:
        last_V, state = prefill(model, encode(prefix)[None].to(model.device))
        parts.append(last_V.float())
    else:
        state = model.new_state(1)
        parts.append(torch.full((1, model.config.vocab_size), math.nan, device=model.device))
    ids_L = encode(row).to(model.device)
    for c in range(0, len(ids_L), DEFAULT_CHUNK_LEN):
        parts.append(forward_chunk(model, ids_L[None, c: c + DEFAULT_CHUNK_LEN], state, logits="all")[0].float())
    return torch.log_softmax(torch.cat(parts), dim=-1).double().cpu().numpy()


def mutagenize(reference, region, *, model=None, config=None, fp8: str = "auto", allow_inexact: bool = False,
               window: int | None = None, tile: int = 1, downstream: int | None = None, reduce: str = "sum",
               mode: str = "window", strand: str = "forward", annotation=None, deletions: bool = False,
               batch_size: int = 16, device: str | None = "auto", dtype: str | None = None,
               threads: int | None = None, out=None, force: bool = False, progress: bool = True
               ) -> list[Mutation]:
    """All three SNVs at every position of ``region`` (samtools ``chr:start-end``, 1-based inclusive, or a
    Region), scored against ``reference`` (FASTA). Rows in position order, alts A, C, G, T; a position whose
    reference base is N or an IUPAC code gets four unscored rows (status n_at_variant / iupac); a window with
    too many or inner Ns gets score-vcf's status. model / config / fp8 / allow_inexact / window / reduce /
    batch_size / device / dtype / threads: as score_variants. tile, downstream: the module docstring.
    mode: "window" (score and site) or "site" (site only, score NaN: one pass over the reference per tile).
    strand: "forward", "reverse" (score on the reverse complement, as score-vcf's --strand both does for its
    second half) or "transcript" (with ``annotation``, a BED with a strand column or a GTF: a position inside
    a transcript on "-" only is scored on the reverse complement; others forward); the row's ``strand``
    says which. deletions: also every 1-bp deletion, written as a VCF writes it (POS the base before,
    REF the two bases, ALT the first), scored with score-vcf's own jobs (exact whatever the tile; forward).
    out: ``.tsv.gz`` / ``.tsv.bgz`` (bgzip + tabix index) or ``.tsv``, written atomically."""
    from ..io import check_output
    from ..log import note
    from .provenance import run_provenance
    from .score_vcf import _load, _open_reference, _window

    _validate(window, tile, downstream, reduce, batch_size, threads, out)
    if mode not in ("window", "site"):
        raise Evo2LiteError(f"--score must be window or site, got {mode!r}")
    if deletions and (mode != "window" or strand != "forward"):
        raise Evo2LiteError("--deletions is implemented for --score window --strand forward only")
    if strand not in ("forward", "reverse", "transcript"):
        raise Evo2LiteError(f"--strand must be forward, reverse or transcript, got {strand!r}")
    if (strand == "transcript") != (annotation is not None):
        raise Evo2LiteError("--strand transcript needs --annotation BED/GTF, and --annotation needs it")
    if out is not None:
        check_output(out, force)
    with contextlib.ExitStack() as stack:
        stack.enter_context(V.quiet_htslib())
        ref = stack.enter_context(_open_reference(reference, stack))
        parsed = region if isinstance(region, R.Region) else R.parse_region(str(region))
        (reg,) = R.resolve_regions([parsed], ref.contigs, ref.resolve)
        if reg.end <= reg.start:
            raise Evo2LiteError(f"region {reg.label} is empty")
        if threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(int(threads))
        loaded = _load(model, device, dtype, config, fp8, allow_inexact)
        win = _window(loaded, window)
        strands = _strands(strand, annotation, reg, ref.resolve)
        contig_len = ref.contigs[reg.contig]
        chrom = parsed.contig if not isinstance(region, R.Region) else reg.contig
        advance = lambda n: None  # noqa: E731
        if progress:
            from ..progress import progress_bar

            advance = stack.enter_context(progress_bar("mutagenesis", total=3 * (reg.end - reg.start),
                                                       unit="variants"))
        rows: list[Mutation] = []
        # tiles: (strand, first, end) in the strand's own coordinates (on "-" counted from the contig's end)
        tiles = [(s, a, min(a + tile, e)) for s, first, e in _strand_runs(strands, reg, contig_len)
                 for a in range(first, e, tile)]
        for g in range(0, len(tiles), _TILES_PER_RUN):
            plans = []
            for strand_, a, b in tiles[g: g + _TILES_PER_RUN]:
                # the reverse complement's window has the variant win - win//2 - 1 bases in: the mirror image
                left = win // 2 if strand_ == "+" else win - win // 2 - 1
                ls, le = max(0, a - left), min(contig_len, b - 1 - left + win)
                if strand_ == "+":
                    seq = ref.fetch(reg.contig, ls, le).upper()
                else:
                    seq = reverse_complement(ref.fetch(reg.contig, contig_len - le, contig_len - ls).upper())
                plans.append(_Plan(seq, ls, a, b, contig_len, win, left, downstream, chrom, strand_, rows))
            if mode == "site":
                for plan in plans:
                    plan.fill_sites(_site_logprobs(loaded, plan.site_prefix, plan.site_row))
                advance(sum(3 * (b - a) for _, a, b in tiles[g: g + _TILES_PER_RUN]))
                continue
            runnable = [p for p in plans if p.job is not None]
            if tile == 1:  # run_jobs batches several sites' prefixes together: score-vcf's batches
                for plan, terms in zip(runnable, jobs.run_jobs(loaded, [p.job for p in runnable], batch_size)):
                    plan.fill(terms, reduce)
            for plan in runnable if tile > 1 else ():
                plan.fill(_run_shared(loaded, plan.job, batch_size), reduce)
            advance(sum(3 * (b - a) for _, a, b in tiles[g: g + _TILES_PER_RUN]))
        if deletions:
            _deletion_rows(ref, reg, chrom, loaded, win, reduce, batch_size, rows)
        rows.sort(key=lambda r: (r.pos, len(r.ref), r.alt))
        meta = run_provenance(loaded, score=mode, window=win, tile=tile, downstream=downstream, reduce=reduce,
                              strand=strand, annotation=None if annotation is None else Path(str(annotation)).name,
                              region=reg.label, reference=Path(str(reference)).name)
    if out is not None:
        write_table(rows, out, meta)
        note(f"wrote {out} ({len(rows):,} rows)")
    return rows


def _deletion_rows(ref, reg: R.Region, chrom: str, model, window: int, reduce: str, batch_size: int,
                   rows: list[Mutation]) -> None:
    """Rows for deleting each base of the region that has a base before it (the VCF anchor), scored through
    score_vcf_jobs exactly as score-vcf scores that VCF record (site_context, allele_windows, site_jobs)."""
    contig_len = ref.contigs[reg.contig]
    fetch = lambda a, b: ref.fetch(reg.contig, a, b)  # noqa: E731
    planned = []
    for s in range(max(1, reg.start), reg.end):
        site = V.site_context(fetch, contig_len, s - 1, window, 2)
        offset = s - 1 - site.win_start
        ref_allele = site.seq[offset: offset + 2]
        row = Mutation(chrom, s, ref_allele, ref_allele[0], math.nan, math.nan, V.STATUS_OK)
        rows.append(row)
        if V.classify_allele(ref_allele) == V.STATUS_IUPAC:
            row.status = V.STATUS_IUPAC
        elif "N" in ref_allele:
            row.status = V.STATUS_N_AT_VARIANT
        else:
            ref_window, alt_window = V.allele_windows(site, ref_allele, row.alt)
            row.status = V.window_status(ref_window, alt_window)
        if row.status == V.STATUS_OK:
            (job, _, lengths), = jobs.site_jobs(ref_window, [alt_window], offset, 2, "forward")
            planned.append((job, lengths, row))
    per_run = _TILES_PER_RUN * batch_size
    for i in range(0, len(planned), per_run):
        part = planned[i: i + per_run]
        for (job, lengths, row), terms in zip(part, jobs.run_jobs(model, [j for j, _, _ in part], batch_size)):
            row.score = jobs.deltas(job, terms, lengths, reduce)[0]


def _strand_runs(strands: list[str], reg: R.Region, contig_len: int) -> list[tuple[str, int, int]]:
    """Runs of one strand over the region as (strand, first, end); a "-" run in reverse-complement
    coordinates (position s -> contig_len - 1 - s)."""
    runs, first = [], 0
    for i in range(1, len(strands) + 1):
        if i == len(strands) or strands[i] != strands[first]:
            a, b = reg.start + first, reg.start + i
            runs.append(("+", a, b) if strands[first] == "+" else ("-", contig_len - b, contig_len - a))
            first = i
    return runs


def _strands(strand: str, annotation, reg: R.Region, resolve) -> list[str]:
    """The strand scored at each position of the region: "-" for reverse, or for transcript where every
    overlapping transcript (score_vcf_strand.TranscriptStrands) is on "-"; "+" elsewhere."""
    n = reg.end - reg.start
    if strand != "transcript":
        return ["+" if strand == "forward" else "-"] * n
    from .score_vcf_strand import TranscriptStrands

    return TranscriptStrands(annotation, resolve).per_position(reg.contig, reg.start, reg.end)


def write_table(rows: list[Mutation], out, meta: dict[str, str] | None = None) -> None:
    """TSV ``#chrom pos ref alt score site status`` after ``#evo2lite_KEY=VALUE`` provenance lines; for
    .gz/.bgz bgzipped with a tabix index (.tbi) beside it. Atomic: both appear only when complete."""
    import os

    from ..io import atomic_path
    from .provenance import comment_lines

    out = Path(out)
    text = "".join(comment_lines(meta or {})) + "\t".join(COLUMNS) + "\n" + "".join(
        f"{r.chrom}\t{r.pos}\t{r.ref}\t{r.alt}\t{_num(r.score)}\t{_num(r.site)}\t{r.status}\t{r.strand}\n"
        for r in rows)
    if out.suffix not in (".gz", ".bgz"):
        with atomic_path(out) as tmp:
            tmp.write_text(text)
        return
    import pysam

    index = Path(f"{out}.tbi")
    with atomic_path(out) as tmp:
        with pysam.BGZFile(str(tmp), "wb") as sink:
            sink.write(text.encode())
        pysam.tabix_index(str(tmp), seq_col=0, start_col=1, end_col=1, meta_char="#", force=True,
                          keep_original=True)
        os.replace(f"{tmp}.tbi", index)  # the index first: a table without its index is never left alone


def _num(x: float) -> str:
    return "NA" if math.isnan(x) else f"{x:.6g}"
