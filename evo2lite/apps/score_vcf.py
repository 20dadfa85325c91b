"""Variant-effect scoring of VCF files: score = log-likelihood(ALT window) - log-likelihood(REF window).

The recipe (Evo 2's): a window of ``window`` bases (default the model's trained context) centred on the
variant, the same length for REF and ALT (indels move the far edge, see pipelines.vcf.allele_windows);
a window's log-likelihood is the sum (``reduce="sum"``) or mean (``"mean"``) of its L-1 next-token
log-probs (the first base is not scored: there is no BOS). ``strand="both"`` averages the forward delta
with the delta of the reverse-complemented windows.

Causality makes most of that work shared. The terms at positions before the first base where an ALT
window differs from the REF window are the same for both, so per site (all records at one position,
whatever their REF) the model runs the bases before the variant once, copies the recurrent state and KV
cache to one row per window (``state.select``), and runs only the suffixes of REF and of every ALT. The
first suffix term is read from the prefix's last logits. Summing the suffix terms of the first L_alt
positions gives the exact delta (prefix terms cancel); the mean divides that delta by L_alt - 1. With
``strand="both"`` the reverse complement shares what follows the variant (SNVs, MNVs); an indel's
reverse-complemented windows differ almost from their first base, so they run whole.

Work is cut into blocks of consecutive records that depend only on the input and the options, so a run
checkpointed after each block and resumed later (or sharded over ranks: block b goes to rank
b % world_size) makes the same batches and writes byte-identical output. Results are checkpointed as
JSON lines next to the output; outputs are written to temp files and renamed when complete.

Legend: B batch, L length, V vocabulary, J prefixes in a chunk, R rows (windows) in a chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..inference.engine import forward_chunk
from ..errors import Evo2LiteError
from ..io import atomic_path, check_output, check_overwrite
from ..log import note, warn
from ..pipelines import vcf as V
from ..pipelines.windows import reverse_complement
from ..tokenizer import encode, encode_batch
from .score import token_logprobs

__all__ = ["score_variants", "VariantScores", "TAG_SCORE", "TAG_STATUS", "TABLE_COLUMNS", "MIN_WINDOW"]

TAG_SCORE = "EVO2_SCORE"
TAG_STATUS = "EVO2_STATUS"
TABLE_COLUMNS = ["chrom", "pos", "id", "ref", "alt", "score", "status"]
MIN_WINDOW = 16
_CHECKPOINT_VERSION = 1
_BLOCK_BATCHES = 8          # a block holds about this many batches of windows: the checkpoint granularity
_MAX_REF_MISMATCH_SHARE = 0.05


@dataclass
class VariantScores:
    """What a run produced. ``table`` has one row per ALT (a record without ALT gets one row, alt ".")
    with ``pos`` the 1-based VCF POS; it is None on non-zero ranks and when the outputs already existed."""

    table: object | None
    num_records: int
    status_counts: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    already_complete: bool = False


# ----------------------------------------------------------------------------------------------------
# The model part: windows -> deltas


@dataclass
class _Job:
    """Windows that share ``prefix``; ``suffixes[0]`` completes the REF window, the rest the ALT windows."""

    prefix: str
    suffixes: list[str]


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _make_job(ref_window: str, alt_windows: list[str], cap: int) -> _Job:
    """Split REF and ALT windows (ALT windows may be shorter) after a prefix all of them share.

    ``cap`` is where the variant starts in these windows: the prefix is exactly ``cap`` long when all
    windows agree that far (always, forward), else empty (e.g. the reverse complement of an indel, whose
    windows differ all the way through the shifted flank). Any prefix length up to the common prefix is
    exact; using the same one for nearly every site lets prefixes of different sites share batches.
    """
    shared = min(_common_prefix_len(ref_window, alt) for alt in alt_windows)
    p = cap if shared >= cap else 0
    # Keep at least one suffix token in every row, so each row's first scored term has a home.
    p = max(0, min(p, min(len(alt) for alt in alt_windows) - 1, len(ref_window) - 1))
    return _Job(ref_window[:p], [w[p:] for w in [ref_window, *alt_windows]])


@torch.inference_mode()
def _run_chunk(model, jobs: list[_Job], p: int, rows: list[tuple[int, int]], out: list[list]) -> None:
    """Run the rows (job, suffix) of one chunk, all with prefixes of length ``p``; fill ``out`` with each
    row's log-prob terms for window positions p, p+1, ... (the term of position 0 is 0: unscored)."""
    device = model.device
    job_ids = list(dict.fromkeys(j for j, _ in rows))
    slot = {j: k for k, j in enumerate(job_ids)}
    row_slot = torch.tensor([slot[j] for j, _ in rows], dtype=torch.long)
    ids_RL, lengths = encode_batch([jobs[j].suffixes[r] for j, r in rows])
    if p > 0:
        prefix_JP = torch.stack([encode(jobs[j].prefix) for j in job_ids]).to(device)
        state = model.new_state(len(job_ids))
        # the prefix needs only its state and its last position's logits
        last_JV = torch.log_softmax(forward_chunk(model, prefix_JP, state, logits="last").float(), dim=-1)
        first_R = last_JV[row_slot.to(device), ids_RL[:, 0].to(device)].double().cpu().numpy()
        logits_RLV = model(ids_RL.to(device), state=state.select(row_slot))
    else:
        first_R = np.zeros(len(rows))
        logits_RLV = model(ids_RL.to(device))
    terms_RL = token_logprobs(logits_RLV, ids_RL).double().cpu().numpy()
    for k, (j, r) in enumerate(rows):
        n = int(lengths[k])
        terms = np.empty(n)
        terms[0] = first_R[k]
        terms[1:] = terms_RL[k, : n - 1]
        out[j][r] = terms


def _run_jobs(model, jobs: list[_Job], batch_size: int) -> list[list[np.ndarray]]:
    """Per job, per row, the log-prob terms of the window positions from len(prefix) on."""
    out: list[list] = [[None] * len(job.suffixes) for job in jobs]
    by_prefix_len: dict[int, list[tuple[int, int]]] = {}
    for j, job in enumerate(jobs):
        by_prefix_len.setdefault(len(job.prefix), []).extend((j, r) for r in range(len(job.suffixes)))
    for p, rows in by_prefix_len.items():  # insertion order: deterministic batches
        for i in range(0, len(rows), batch_size):
            _run_chunk(model, jobs, p, rows[i: i + batch_size], out)
    return out


def _deltas(job: _Job, terms: list[np.ndarray], alt_lengths: list[int], reduce: str) -> list[float]:
    """ALT - REF log-likelihood for each ALT window (length alt_lengths[i]); REF terms are cut to match."""
    p = len(job.prefix)
    ref_cum = np.concatenate([[0.0], np.cumsum(terms[0])])
    deltas = []
    for alt_terms, length in zip(terms[1:], alt_lengths):
        delta = float(alt_terms.sum() - ref_cum[length - p])
        if reduce == "mean":
            delta = delta / (length - 1) if length > 1 else 0.0
        deltas.append(delta)
    return deltas


def _site_jobs(ref_window: str, alt_windows: list[str], offset: int, ref_len: int,
               strand: str) -> list[tuple[_Job, list[int], list[int]]]:
    """(job, which ALTs, their window lengths) for one site whose variants start at ``offset`` in the
    windows, with REF alleles up to ``ref_len`` long: the forward job, and for strand both one
    reverse-complement job per distinct ALT window length (the RC of a shortened window starts elsewhere)."""
    lengths = [len(a) for a in alt_windows]
    jobs = [(_make_job(ref_window, alt_windows, offset), list(range(len(alt_windows))), lengths)]
    if strand == "both":
        by_len: dict[int, list[int]] = {}
        for i, length in enumerate(lengths):
            by_len.setdefault(length, []).append(i)
        for length, members in by_len.items():
            job = _make_job(reverse_complement(ref_window[:length]),
                            [reverse_complement(alt_windows[i]) for i in members], max(0, length - offset - ref_len))
            jobs.append((job, members, [length] * len(members)))
    return jobs


# ----------------------------------------------------------------------------------------------------
# Records -> statuses and windows -> results, one block at a time


class _Context:
    """What scoring a block needs: reference, contig aliases, model and options."""

    def __init__(self, reference, model, window: int, reduce: str, strand: str, batch_size: int):
        self.reference = reference
        self.model = model
        self.window = window
        self.reduce = reduce
        self.strand = strand
        self.batch_size = batch_size
        self._aliases: dict[str, str | None] = {}

    def contig(self, chrom: str) -> str | None:
        if chrom not in self._aliases:
            try:
                self._aliases[chrom] = self.reference.resolve(chrom)
            except Evo2LiteError:
                self._aliases[chrom] = None
        return self._aliases[chrom]


def _record_status(variant: V.Variant, ctx: _Context) -> str:
    """The status every ALT of a record shares: contig, REF text, range, REF against the reference."""
    contig = ctx.contig(variant.chrom)
    if contig is None:
        return V.STATUS_CONTIG_ABSENT
    ref_class = V.classify_allele(variant.ref)
    if ref_class == V.STATUS_IUPAC:
        return V.STATUS_IUPAC
    if ref_class != V.STATUS_OK:
        return V.STATUS_INVALID_ALLELE
    if variant.start < 0 or variant.end > ctx.reference.contigs[contig]:
        return V.STATUS_OUT_OF_RANGE
    if not V.check_ref(variant.ref, ctx.reference.fetch(contig, variant.start, variant.end)):
        return V.STATUS_REF_MISMATCH
    return V.STATUS_OK


def _score_block(block: list[V.Variant], ctx: _Context) -> dict[int, list[list]]:
    """Results of a block: record index -> [[score or None, status], ...] (one entry per ALT)."""
    results: dict[int, list[list]] = {}
    sites: dict[tuple[str, int], list[tuple[V.Variant, int]]] = {}
    for variant in block:
        if not variant.alts:
            results[variant.index] = [[None, V.STATUS_MISSING_ALT]]
            continue
        record_status = None
        entries = []
        for i, alt in enumerate(variant.alts):
            status = V.classify_allele(alt)
            if status == V.STATUS_OK:
                record_status = record_status or _record_status(variant, ctx)
                status = record_status
            entries.append([None, status])
            if status == V.STATUS_OK:
                sites.setdefault((ctx.contig(variant.chrom), variant.start), []).append((variant, i))
        results[variant.index] = entries

    planned = []  # (job, [(record, alt index)], lengths)
    for (contig, start), members in sites.items():
        ref_len = max(len(v.ref) for v, _ in members)
        site = V.site_context(lambda s, e, c=contig: ctx.reference.fetch(c, s, e), ctx.reference.contigs[contig],
                              start, ctx.window, ref_len)
        if V.window_status(site.ref_window) != V.STATUS_OK:
            for v, i in members:
                results[v.index][i][1] = V.STATUS_WINDOW_N
            continue
        alt_windows = [V.allele_windows(site, v.ref, v.alts[i])[1] for v, i in members]
        for job, which, lengths in _site_jobs(site.ref_window, alt_windows, start - site.win_start, ref_len,
                                              ctx.strand):
            planned.append((job, [(members[k][0].index, members[k][1]) for k in which], lengths))

    if planned:
        terms = _run_jobs(ctx.model, [job for job, _, _ in planned], ctx.batch_size)
        totals: dict[tuple[int, int], list[float]] = {}
        for (job, keys, lengths), job_terms in zip(planned, terms):
            for key, delta in zip(keys, _deltas(job, job_terms, lengths, ctx.reduce)):
                totals.setdefault(key, []).append(delta)
        for (index, i), deltas in totals.items():
            results[index][i][0] = float(sum(deltas) / len(deltas))  # strand both: forward and RC
    return results


def _blocks(source: V.VcfInput, vf, regions: V.RegionSet | None, target_rows: int):
    """(block number, [Variant]) for the records in ``regions``: consecutive records until about
    ``target_rows`` windows, never splitting one position. Depends only on the input and options."""
    block: list[V.Variant] = []
    rows, last_key, number = 0, None, 0
    for index, rec in source.records(vf):
        variant = V.variant_from_record(rec, index)
        if regions is not None and not regions.overlaps(variant.chrom, variant.start, variant.end):
            continue
        key = (variant.chrom, variant.start)
        if block and rows >= target_rows and key != last_key:
            yield number, block
            number, block, rows = number + 1, [], 0
        rows += len(variant.alts) + (key != last_key)
        block.append(variant)
        last_key = key
    if block:
        yield number, block


# ----------------------------------------------------------------------------------------------------
# Checkpoints


class _Checkpoint:
    """Append-only JSON lines: a header with the run's fingerprint, one line per finished block, and a
    final ``{"done": true}``. A torn last line (killed mid-write) is dropped on reading."""

    def __init__(self, directory: Path, rank: int, world_size: int):
        self.directory = directory
        self.path = directory / f"part-{rank}-of-{world_size}.jsonl"

    @staticmethod
    def read(path: Path) -> tuple[dict | None, dict[int, dict], bool]:
        header, blocks, done = None, {}, False
        if not path.exists():
            return header, blocks, done
        with open(path) as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    break
                if "fingerprint" in item:
                    header = item
                elif "block" in item:
                    blocks[item["block"]] = {int(k): v for k, v in item["results"].items()}
                elif item.get("done"):
                    done = True
        return header, blocks, done

    def start(self, fingerprint: str, blocks: dict[int, dict]) -> None:
        """(Re)write the file holding exactly the given finished blocks, then append from there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps({"fingerprint": fingerprint, "version": _CHECKPOINT_VERSION}) + "\n")
            for number in sorted(blocks):
                fh.write(self._block_line(number, blocks[number]))
        os.replace(tmp, self.path)
        self._fh = open(self.path, "a")

    @staticmethod
    def _block_line(number: int, results: dict[int, list]) -> str:
        return json.dumps({"block": number, "results": {str(k): v for k, v in results.items()}}) + "\n"

    def append(self, number: int, results: dict[int, list]) -> None:
        self._fh.write(self._block_line(number, results))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def finish(self) -> None:
        self._fh.write(json.dumps({"done": True}) + "\n")
        self.close()

    def close(self) -> None:
        if getattr(self, "_fh", None) is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None


# ----------------------------------------------------------------------------------------------------
# Output


def _fmt_score(score) -> str:
    return "." if score is None or not math.isfinite(score) else f"{score:.6g}"


def _output_header(header, meta: dict[str, str], window: int, reduce: str, strand: str) -> str:
    """The input's header text (as htslib completed it) with our INFO and ##evo2lite_* lines in place of
    any earlier ones. Text, not pysam's header API: htslib cannot re-add an ID it has removed."""
    ours = (f"##INFO=<ID={TAG_SCORE},", f"##INFO=<ID={TAG_STATUS},", "##evo2lite_")
    lines = [line for line in str(header).splitlines(keepends=True) if not line.startswith(ours)]
    reasons = ", ".join(k for k in V.STATUS_DESCRIPTIONS if k != V.STATUS_OK)
    added = [
        f'##INFO=<ID={TAG_SCORE},Number=A,Type=Float,Description="evo2lite log-likelihood of the ALT window '
        f'minus the REF window ({window} bases centred on the variant, reduce={reduce}, strand={strand}); '
        f'missing where not scored, see {TAG_STATUS}">\n',
        f'##INFO=<ID={TAG_STATUS},Number=A,Type=String,Description="ok if scored, else why not: {reasons}">\n',
    ] + [f"##evo2lite_{key}={' '.join(str(value).split())}\n" for key, value in meta.items()]
    return "".join(lines[:-1] + added + lines[-1:])


def _annotate(line: str, entries: list[list] | None) -> str:
    """A VCF text line with our INFO tags replacing any old ones (none for a record without ALT)."""
    cols = line.rstrip("\n").split("\t")
    items = [] if cols[7] == "." else [kv for kv in cols[7].split(";")
                                       if kv.split("=", 1)[0] not in (TAG_SCORE, TAG_STATUS)]
    if entries and cols[4] != ".":
        items.append(f"{TAG_SCORE}=" + ",".join(_fmt_score(s) for s, _ in entries))
        items.append(f"{TAG_STATUS}=" + ",".join(status for _, status in entries))
    cols[7] = ";".join(items) or "."
    return "\t".join(cols) + "\n"


def _tabix(path: Path) -> bool:
    """Index a bgzipped VCF (.tbi, or .csi for contigs past 2^29); False if it cannot be (unsorted input)."""
    import pysam

    for csi in (False, True):
        try:
            pysam.tabix_index(str(path), preset="vcf", force=True, keep_original=True, csi=csi)
            return True
        except (OSError, ValueError, pysam.SamtoolsError):
            continue
    return False


def _write_outputs(source: V.VcfInput, regions, results: dict[int, list], header_text: str,
                   out: str | None, table: str | None) -> object:
    """Write the annotated VCF and/or the table (atomically) and return the table as a DataFrame."""
    import pandas as pd
    import pysam

    rows = []
    with contextlib.ExitStack() as stack:
        vcf_tmp = None
        if out is not None:
            if out == "-":
                tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="evo2lite-out-"))
                vcf_tmp = Path(tmpdir) / "out.vcf"
            else:
                vcf_tmp = stack.enter_context(atomic_path(out))
        table_tmp = stack.enter_context(atomic_path(table)) if table is not None else None
        gz = out is not None and out != "-" and out.endswith((".gz", ".bgz"))
        writer = None
        if vcf_tmp is not None:
            writer = pysam.BGZFile(str(vcf_tmp), "wb") if gz else open(vcf_tmp, "wb")
            writer.write(header_text.encode())
        vf = source.open()
        try:
            for index, rec in source.records(vf):
                variant = V.variant_from_record(rec, index)
                if regions is not None and not regions.overlaps(variant.chrom, variant.start, variant.end):
                    continue
                entries = results[index]
                if writer is not None:
                    writer.write(_annotate(str(rec), entries).encode())
                alts = variant.alts or (".",)
                for alt, (score, status) in zip(alts, entries):
                    rows.append((variant.chrom, variant.pos, variant.id or ".", variant.ref, alt,
                                 math.nan if score is None else score, status))
        finally:
            vf.close()
            if writer is not None:
                writer.close()
        frame = pd.DataFrame(rows, columns=TABLE_COLUMNS)
        if table_tmp is not None:
            if str(table).endswith(".parquet"):
                frame.to_parquet(table_tmp, index=False)
            else:
                # mtime 0: a gzip header without a timestamp, so reruns are byte-identical
                frame.to_csv(table_tmp, sep="\t", index=False, float_format="%.6g", na_rep="",
                             compression={"method": "gzip", "mtime": 0} if str(table).endswith(".gz") else None)
        indexed = gz and _tabix(vcf_tmp)
        if gz and not indexed:
            warn(f"{out}: not indexed (tabix needs records sorted by position, as the input was not)")
        if out == "-":
            sys.stdout.flush()
            with open(vcf_tmp, "rb") as fh:
                shutil.copyfileobj(fh, sys.stdout.buffer)
            sys.stdout.flush()
    # The data files are in place now; move the index beside its file (a stale one goes).
    if gz:
        for suffix in (".tbi", ".csi"):
            stale = Path(out + suffix)
            stale.unlink(missing_ok=True)
            made = Path(str(vcf_tmp) + suffix)
            if made.exists():
                os.replace(made, stale)
    return frame


# ----------------------------------------------------------------------------------------------------
# The API


def _validate(window, reduce, strand, batch_size, out, table) -> None:
    if window is not None and (not isinstance(window, int) or window < MIN_WINDOW):
        raise Evo2LiteError(f"--window must be an integer >= {MIN_WINDOW}, got {window!r}")
    if reduce not in ("sum", "mean"):
        raise Evo2LiteError(f"--reduce must be sum or mean, got {reduce!r}")
    if strand not in ("forward", "both"):
        raise Evo2LiteError(f"--strand must be forward or both, got {strand!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise Evo2LiteError(f"--batch-size must be a positive integer, got {batch_size!r}")
    if out is not None and out != "-" and not out.endswith((".vcf", ".vcf.gz", ".vcf.bgz")):
        raise Evo2LiteError(f"-o {out}: the output VCF must end in .vcf or .vcf.gz (or be - for stdout); "
                            "for BCF convert it afterwards with `bcftools view -Ob`")
    if table is not None and not table.endswith((".tsv", ".tsv.gz", ".parquet")):
        raise Evo2LiteError(f"--table {table}: the table must end in .tsv, .tsv.gz or .parquet")
    if out is not None and table is not None and out != "-" and Path(out).resolve() == Path(table).resolve():
        raise Evo2LiteError("-o and --table name the same file")


def _model_identity(model) -> dict:
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().double()
            digest.update(f"{name}:{tuple(t.shape)}:{t.sum().item():.17g}:{t.abs().sum().item():.17g}".encode())
    return {"source": str(getattr(model, "source", type(model).__name__)),
            "config": model.config.to_dict() if hasattr(model.config, "to_dict") else repr(model.config),
            "dtype": str(model.dtype), "device": model.device.type, "weights": digest.hexdigest()}


def _load(model, device, dtype):
    if isinstance(model, torch.nn.Module):
        return model.eval()
    from ..checkpoint import load_model

    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model(model, device=device, dtype=dtype).eval()


def _rank_and_world(rank, world_size) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise Evo2LiteError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


def score_variants(vcf, reference, *, model=None, window: int | None = None, reduce: str = "sum",
                   strand: str = "forward", batch_size: int = 16, device: str | None = "auto",
                   dtype: str | None = None, threads: int | None = None, out=None, table=None,
                   resume: bool = False, force: bool = False, regions=None, progress: bool = True,
                   rank: int | None = None, world_size: int | None = None) -> VariantScores:
    """Score every ALT of a VCF/BCF (``-`` = stdin) against a reference FASTA.

    model: None (the shipped default), anything ``load_model`` accepts, or a loaded model. window: bases
    per window, >= 16, default the model's trained context. reduce: "sum" | "mean". strand: "forward" |
    "both". batch_size: windows per forward pass. out: annotated VCF (``.vcf``, ``.vcf.gz`` = bgzip +
    tabix, ``-`` = stdout). table: ``.tsv[.gz]`` or ``.parquet``, one row per ALT. regions: a BED file or
    ``chr:start-end[,...]`` (1-based). resume: continue from the checkpoint next to the output. force:
    overwrite existing outputs / discard a checkpoint. rank, world_size: shard blocks over processes
    (default from torchrun's RANK / WORLD_SIZE; rank 0 merges and writes).
    """
    from .. import __version__

    out = None if out is None else str(out)
    table = None if table is None else str(table)
    _validate(window, reduce, strand, batch_size, out, table)
    rank, world_size = _rank_and_world(rank, world_size)
    if world_size > 1 and out is None and table is None:
        raise Evo2LiteError("several ranks merge through the checkpoint next to the output: give -o or --table")
    outputs = [p for p in (out, table) if p is not None and p != "-"]
    for path in outputs:
        check_output(path, force or resume)  # with --resume, existing outputs are judged below
    region_set = regions if isinstance(regions, V.RegionSet) or regions is None else V.parse_regions(regions)

    with contextlib.ExitStack() as stack:
        stack.enter_context(V.quiet_htslib())
        ref = stack.enter_context(_open_reference(reference, stack))
        source = stack.enter_context(V.VcfInput(vcf))

        # Pass 1: read everything once (file-level problems surface here, before any work or output),
        # complete the header (htslib adds undeclared contigs/tags while reading) and plan the blocks.
        target_rows = _BLOCK_BATCHES * batch_size
        vf = source.open()
        try:
            block_sizes = [len(block) for _, block in _blocks(source, vf, region_set, target_rows)]
            header = vf.header.copy()
        finally:
            vf.close()
        _warn_contig_lengths(header, ref, source.name)
        if threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(int(threads))
        loaded = _load(model, device, dtype)
        win = int(window or loaded.config.context_len)

        fingerprint = _fingerprint(source, ref, loaded, win, reduce, strand, batch_size, region_set)
        meta = {"version": __version__, "model": str(getattr(loaded, "source", "model")), "window": str(win),
                "reduce": reduce, "strand": strand, "reference": Path(str(reference)).name}
        if regions is not None:
            meta["regions"] = str(regions) if not isinstance(regions, V.RegionSet) else f"{len(regions)} regions"
        meta["fingerprint"] = fingerprint
        header_text = _output_header(header, meta, win, reduce, strand)
        num_records = sum(block_sizes)

        ckpt_dir = _checkpoint_dir(out, table, fingerprint)
        checkpoint = _Checkpoint(ckpt_dir, rank, world_size) if ckpt_dir is not None else None
        done_blocks: dict[int, dict] = {}
        if checkpoint is not None:
            found, blocks, _ = _Checkpoint.read(checkpoint.path)
            if found is not None and not resume and not force:
                raise Evo2LiteError(f"{checkpoint.path} holds an interrupted run: add --resume to continue it, "
                                    "or --force to start over")
            if resume and found is None and outputs and all(Path(p).exists() for p in outputs):
                _check_complete(out, fingerprint)
                note("outputs are already complete; nothing to do")
                return VariantScores(table=None, num_records=num_records, outputs=outputs, already_complete=True)
            if resume and found is not None:
                if found.get("fingerprint") != fingerprint:
                    raise Evo2LiteError(f"cannot resume: the inputs or options differ from the run checkpointed "
                                        f"in {checkpoint.directory}; rerun the same command, or pass --force "
                                        "to start over")
                done_blocks = blocks
            elif resume:
                for path in outputs:
                    check_overwrite(path, force)
            checkpoint.start(fingerprint, done_blocks)
            stack.callback(checkpoint.close)

        ctx = _Context(ref, loaded, win, reduce, strand, batch_size)
        todo = sum(size for b, size in enumerate(block_sizes) if b % world_size == rank and b not in done_blocks)
        if progress:
            from ..progress import progress_bar

            label = "scoring variants" + (f" ({num_records - todo} done before)" if done_blocks else "")
            advance = stack.enter_context(progress_bar(label, total=todo, unit="variants"))
        else:
            advance = lambda n: None  # noqa: E731
        results: dict[int, list] = {}
        for blocks in done_blocks.values():
            results.update(blocks)
        vf = source.open()
        try:
            for number, block in _blocks(source, vf, region_set, target_rows):
                if number % world_size != rank or number in done_blocks:
                    continue
                block_results = _score_block(block, ctx)
                if checkpoint is not None:
                    checkpoint.append(number, block_results)
                results.update(block_results)
                advance(len(block))
        except KeyboardInterrupt:
            if checkpoint is not None:
                note(f"interrupted; finished blocks are in {checkpoint.directory}: rerun with --resume to continue")
            raise
        finally:
            vf.close()
        if checkpoint is not None:
            checkpoint.finish()
        if rank != 0:
            return VariantScores(table=None, num_records=num_records, outputs=[])
        if world_size > 1:
            results = _gather_parts(checkpoint, world_size, fingerprint)

        missing = num_records - len(results)
        assert missing == 0, f"{missing} records have no result"
        frame = _write_outputs(source, region_set, results, header_text, out, table)
        counts = Counter(status for entries in results.values() for _, status in entries)
        _warn_ref_mismatches(results, source.name, str(reference))
        if checkpoint is not None:
            shutil.rmtree(checkpoint.directory, ignore_errors=True)
        return VariantScores(table=frame, num_records=num_records, status_counts=dict(counts), outputs=outputs)


def _open_reference(path, stack: contextlib.ExitStack):
    """A ReferenceGenome; a plain-gzip FASTA (faidx cannot index it) is recompressed to BGZF in a temp folder."""
    from ..pipelines.fasta import ReferenceGenome, detect_compression, to_bgzf

    if Path(path).is_file() and detect_compression(path) == "gzip":
        note(f"{path} is plain gzip, which faidx cannot index: recompressing it to BGZF in a temporary folder; "
             f"`zcat {path} | bgzip > ref.fa.gz` once avoids this")
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="evo2lite-ref-"))
        path = to_bgzf(path, Path(folder) / Path(path).name)
    return ReferenceGenome(path)


def _fingerprint(source, ref, model, window, reduce, strand, batch_size, regions) -> str:
    from .. import __version__

    data = {
        "version": __version__,
        "input": source.sha256(),
        "reference": [Path(ref.path).stat().st_size, sorted(ref.contigs.items())],
        "model": _model_identity(model),
        # batch_size decides the batches and so the last bits of the scores; the number of ranks does
        # not (blocks are fixed), and each rank keeps its own checkpoint file anyway.
        "options": {"window": window, "reduce": reduce, "strand": strand, "batch_size": batch_size,
                    "regions": None if regions is None else [(r.chrom, r.start, r.end) for r in regions.regions]},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _checkpoint_dir(out: str | None, table: str | None, fingerprint: str) -> Path | None:
    for path in (out, table):
        if path is not None and path != "-":
            return Path(path + ".evo2lite-ckpt")
    if out == "-":
        return Path.cwd() / f"evo2lite-score-vcf-{fingerprint[:16]}.evo2lite-ckpt"
    return None


def _check_complete(out: str | None, fingerprint: str) -> None:
    """With --resume and every output present: fine if the VCF was made by this very run."""
    if out is None or out == "-":
        return
    from ..pipelines.fasta import open_binary

    with open_binary(out) as fh:
        for raw in fh:
            if not raw.startswith(b"##"):
                break
            if raw.startswith(b"##evo2lite_fingerprint="):
                if raw.strip().split(b"=", 1)[1].decode() == fingerprint:
                    return
                break
    raise Evo2LiteError(f"{out} exists but was made from other inputs or options; pass --force to overwrite it")


def _gather_parts(checkpoint: _Checkpoint, world_size: int, fingerprint: str) -> dict[int, list]:
    """Rank 0: wait until every rank's part is done, then merge them (all share the checkpoint folder)."""
    results: dict[int, list] = {}
    waited = 0.0
    for rank in range(world_size):
        path = checkpoint.directory / f"part-{rank}-of-{world_size}.jsonl"
        while True:
            header, blocks, done = _Checkpoint.read(path)
            if done:
                break
            if waited == 0.0:
                note(f"waiting for the other ranks to finish ({path})")
            time.sleep(1.0)
            waited += 1.0
        if header is None or header.get("fingerprint") != fingerprint:
            raise Evo2LiteError(f"{path} belongs to another run; remove {checkpoint.directory} and rerun")
        for part in blocks.values():
            results.update(part)
    return results


def _warn_contig_lengths(header, ref, name: str) -> None:
    for contig, length in V.header_contig_lengths(header).items():
        try:
            resolved = ref.resolve(contig)
        except Evo2LiteError:
            continue
        if ref.contigs[resolved] != length:
            warn(f"{name}: ##contig {contig} has length {length} but {resolved} in {ref.path} has "
                 f"{ref.contigs[resolved]}: are the VCF and the reference the same genome build?")


def _warn_ref_mismatches(results: dict[int, list], name: str, reference: str) -> None:
    compared = (V.STATUS_OK, V.STATUS_REF_MISMATCH, V.STATUS_WINDOW_N)
    statuses = [{status for _, status in entries} for entries in results.values()]
    checked = sum(bool(s.intersection(compared)) for s in statuses)
    bad = sum(V.STATUS_REF_MISMATCH in s for s in statuses)
    if bad and bad >= max(5, _MAX_REF_MISMATCH_SHARE * checked):
        warn(f"{bad} of {checked} records in {name} have a REF that does not match {reference}: "
             "is the VCF from another genome build (GRCh37 vs GRCh38)?")

