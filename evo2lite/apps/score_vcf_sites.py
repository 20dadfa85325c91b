"""score-vcf, records -> results: blocks of records, each ALT's status, and the sites the model scores.

A block is a run of consecutive records (never splitting one position) cut only by the input and the
options, so a checkpointed, resumed or sharded run makes the same batches and the same output bytes.
Within a block, records at one position form a site: one REF window, one job per strand for all its ALTs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from ..errors import Evo2LiteError
from ..pipelines import vcf as V
from . import score_vcf_jobs as jobs

__all__ = ["Context", "Item", "record_status", "score_block", "blocks"]

# One record of a block: the parsed variant and its VCF text line (what the annotated output rewrites).
Item = tuple[V.Variant, str]


class Context:
    """What scoring a block needs: reference, contig aliases, model and options."""

    def __init__(self, reference, model, window: int, reduce: str, strand: str, batch_size: int,
                 score: str = "window", transcripts=None, tag: str = ""):
        self.reference = reference
        self.model = model
        self.window = window
        self.reduce = reduce
        self.strand = strand  # forward | both | transcript (then ``transcripts`` picks per site)
        self.batch_size = batch_size
        self.score = score  # window | site (window plus the SNV site score)
        self.transcripts = transcripts  # score_vcf_strand.TranscriptStrands or None
        self.tag = tag  # a phylogenetic tag run before every window ("" = none)
        self._aliases: dict[str, str | None] = {}

    def contig(self, chrom: str) -> str | None:
        if chrom not in self._aliases:
            try:
                self._aliases[chrom] = self.reference.resolve(chrom)
            except Evo2LiteError:
                self._aliases[chrom] = None
        return self._aliases[chrom]


def record_status(variant: V.Variant, ctx: Context) -> str:
    """The status every ALT of a record shares: contig, REF text, range, REF against the reference."""
    contig = ctx.contig(variant.chrom)
    if contig is None:
        return V.STATUS_CONTIG_ABSENT
    ref_class = V.classify_allele(variant.ref)
    if ref_class == V.STATUS_IUPAC:
        return V.STATUS_IUPAC
    if ref_class not in (V.STATUS_OK, V.STATUS_N_ALLELE):  # an N in REF matches any reference base
        return V.STATUS_INVALID_ALLELE
    if variant.start < 0 or variant.end > ctx.reference.contigs[contig]:
        return V.STATUS_OUT_OF_RANGE
    under = ctx.reference.fetch(contig, variant.start, variant.end).upper()
    if not V.check_ref(variant.ref, under):
        return V.STATUS_REF_MISMATCH
    if "N" in under:
        return V.STATUS_N_AT_VARIANT
    return V.STATUS_OK


def score_block(block: list[Item], ctx: Context) -> dict[int, list[list]]:
    """Results of a block: record index -> [[score or None, status, site or None, strand or None], ...]
    (one entry per ALT). site: the SNV site score (``ctx.score == "site"``); strand: "+" or "-", the
    strand scored (``ctx.strand == "transcript"``)."""
    results: dict[int, list[list]] = {}
    sites: dict[tuple[str, int], list[tuple[V.Variant, int]]] = {}
    for variant, _ in block:
        if not variant.alts:
            results[variant.index] = [[None, V.STATUS_MISSING_ALT, None, None]]
            continue
        shared = None
        entries = []
        for i, alt in enumerate(variant.alts):
            status = V.classify_allele(alt)
            if status == V.STATUS_OK:
                shared = shared or record_status(variant, ctx)
                status = shared
            entries.append([None, status, None, None])
            if status == V.STATUS_OK:
                sites.setdefault((ctx.contig(variant.chrom), variant.start), []).append((variant, i))
        results[variant.index] = entries

    planned = []  # (job, [(record, alt index)], lengths, position of the variant in the job's windows)
    snv: set[tuple[int, int]] = set()  # (record, alt index) of the SNVs that get a site score
    for (contig, start), members in sites.items():
        ref_len = max(len(v.ref) for v, _ in members)
        strand = ctx.strand
        if strand == "transcript":
            sign = ctx.transcripts.strand(contig, start, start + ref_len)
            strand = "forward" if sign == "+" else "reverse"
            for v, i in members:
                results[v.index][i][3] = sign
        site = V.site_context(lambda s, e, c=contig: ctx.reference.fetch(c, s, e), ctx.reference.contigs[contig],
                              start, ctx.window, ref_len)
        alt_windows, scored = [], []
        for v, i in members:
            alt_window = V.allele_windows(site, v.ref, v.alts[i])[1]
            status = V.window_status(site.ref_window, alt_window)
            if status == V.STATUS_OK:
                alt_windows.append(alt_window)
                scored.append((v, i))
                if ctx.score == "site" and len(v.ref) == 1 and len(v.alts[i]) == 1:
                    snv.add((v.index, i))
            else:
                results[v.index][i][1] = status
        if not scored:
            continue
        offset = start - site.win_start
        site_list = jobs.site_jobs(site.ref_window, alt_windows, offset, ref_len, strand)
        for k, (job, which, lengths) in enumerate(site_list):
            rc = strand == "reverse" or k > 0
            # an SNV's base sits at `offset` forward, at length - offset - 1 on the reverse complement
            at = lengths[0] - offset - 1 if rc else offset
            planned.append((job, [(scored[m][0].index, scored[m][1]) for m in which], lengths, at))

    if planned:
        tagged = {"tag": ctx.tag} if ctx.tag else {}
        terms = jobs.run_jobs(ctx.model, [job for job, _, _, _ in planned], ctx.batch_size, **tagged)
        totals: dict[tuple[int, int], list[float]] = {}
        site_totals: dict[tuple[int, int], list[float]] = {}
        for (job, keys, lengths, at), job_terms in zip(planned, terms):
            for key, delta in zip(keys, jobs.deltas(job, job_terms, lengths, ctx.reduce)):
                totals.setdefault(key, []).append(delta)
            if snv:
                for key, value in zip(keys, jobs.site_delta(job, job_terms, at)):
                    if key in snv:
                        site_totals.setdefault(key, []).append(value)
        for (index, i), deltas in totals.items():
            results[index][i][0] = float(sum(deltas) / len(deltas))  # strand both: forward and RC
        for (index, i), values in site_totals.items():
            value = float(sum(values) / len(values))
            results[index][i][2] = value if math.isfinite(value) else None  # NaN: the contig's first base
    return results


def blocks(records: Iterable[tuple[int, object]], target_rows: int) -> Iterator[tuple[int, list[Item]]]:
    """(block number, [(Variant, VCF line)]) from ``(index, pysam record)`` pairs: consecutive records
    until about ``target_rows`` windows, never splitting one position. Depends only on the records and
    the options."""
    block: list[Item] = []
    rows, last_key, number = 0, None, 0
    for index, rec in records:
        variant = V.variant_from_record(rec, index)
        key = (variant.chrom, variant.start)
        if block and rows >= target_rows and key != last_key:
            yield number, block
            number, block, rows = number + 1, [], 0
        rows += len(variant.alts) + (key != last_key)
        block.append((variant, str(rec)))
        last_key = key
    if block:
        yield number, block
