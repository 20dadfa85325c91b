"""Variant-effect scoring of VCF files: score = log-likelihood(ALT window) - log-likelihood(REF window).

The recipe (Evo 2's): a window of ``window`` bases centred on the variant, the same length for REF and
ALT (indels move the far edge, see pipelines.vcf.allele_windows); a window's log-likelihood is the sum
(``reduce="sum"``) or mean (``"mean"``) of its L-1 next-token log-probs (the first base is not scored:
there is no BOS). ``strand="both"`` averages the forward delta with the delta of the reverse-complemented
windows. The model part (shared prefixes) is in score_vcf_jobs, statuses and sites in score_vcf_sites,
checkpoints and writers in score_vcf_io, transcript strands (``strand="transcript"``) in score_vcf_strand.
``score="site"`` adds the SNV site score (the first differing term of the same pass), ``tag`` a phylogenetic
tag run before every window as context only (docs/score-vcf.md, docs/tags.md).

The input is read once and streamed: records are cut into blocks (score_vcf_sites.blocks), each block is
scored and its records go straight to the writers in input order, so memory does not grow with the
number of records. With regions and a tabix/CSI index beside the input, only the regions are read
(``fetch``); without an index the file is scanned. A run checkpointed after each block and resumed
later, or sharded over ranks (block b goes to rank b % world_size), makes the same batches and writes
byte-identical output. With several ranks, rank 0 writes the other ranks' blocks as their checkpoint parts
receive them, in the same single pass over the input.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import Evo2LiteError
from ..io import check_output, check_overwrite
from ..log import note, warn
from ..pipelines import regions as R
from ..pipelines import vcf as V
from . import score_vcf_sites as sites
from .score_vcf_io import TABLE_COLUMNS, TAG_SCORE, TAG_STATUS, Checkpoint, Outputs, PartFollower, \
    check_complete, checkpoint_dir, output_header

__all__ = ["score_variants", "VariantScores", "TAG_SCORE", "TAG_STATUS", "TABLE_COLUMNS", "MIN_WINDOW"]

MIN_WINDOW = 16
_BLOCK_BATCHES = 8          # a block holds about this many batches of windows: the checkpoint granularity
_MAX_PENDING_PER_RANK = 4   # rank 0 holds at most this many blocks per rank that wait for another rank
_MAX_REF_MISMATCH_SHARE = 0.05


@dataclass
class VariantScores:
    """What a run produced. ``table`` (with ``keep_table``) has one row per ALT (a record without ALT gets
    one row, alt ".") with ``pos`` the 1-based VCF POS; None otherwise, on non-zero ranks and when the
    outputs already existed."""

    table: object | None
    num_records: int
    status_counts: dict[str, int] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    already_complete: bool = False


def _validate(window, reduce, strand, batch_size, threads, out, table, score="window", annotation=None,
              tag=None) -> None:
    from ..options import check_options

    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < MIN_WINDOW):
        raise Evo2LiteError(f"--window must be an integer >= {MIN_WINDOW}, got {window!r}")
    check_options(batch_size=batch_size, threads=threads)
    if reduce not in ("sum", "mean"):
        raise Evo2LiteError(f"--reduce must be sum or mean, got {reduce!r}")
    if strand not in ("forward", "both", "transcript"):
        raise Evo2LiteError(f"--strand must be forward, both or transcript, got {strand!r}")
    if (strand == "transcript") != (annotation is not None):
        raise Evo2LiteError("--strand transcript needs --annotation BED/GTF, and --annotation needs it")
    if score not in ("window", "site"):
        raise Evo2LiteError(f"--score must be window or site, got {score!r}")
    if tag:
        from ..tags import check_tag

        check_tag(tag)
    if out is not None and out != "-" and not out.endswith((".vcf", ".vcf.gz", ".vcf.bgz")):
        raise Evo2LiteError(f"-o {out}: the output VCF must end in .vcf or .vcf.gz (or be - for stdout); "
                            "for BCF convert it afterwards with `bcftools view -Ob`")
    if table is not None and not table.endswith((".tsv", ".tsv.gz", ".tsv.bgz", ".parquet")):
        raise Evo2LiteError(f"--table {table}: the table must end in .tsv, .tsv.gz / .tsv.bgz (bgzip + tabix "
                            "index) or .parquet")
    if out is not None and table is not None and out != "-" and Path(out).resolve() == Path(table).resolve():
        raise Evo2LiteError("-o and --table name the same file")


def _region_list(regions, regions_file) -> list[R.Region] | None:
    """-r (strings or Regions, repeatable) and -R (BED files) as one list; None when neither is given."""
    if isinstance(regions, (str, R.Region)):
        regions = [regions]
    texts = [r for r in regions or () if not isinstance(r, R.Region)]
    for text in texts:
        if Path(text).is_file() or str(text).lower().endswith((".bed", ".bed.gz")):
            raise R.RegionError(f"--regions {text}: a BED file goes to -R/--regions-file")
    given = R.regions_from_options(texts, regions_file) or []
    given += [r for r in regions or () if isinstance(r, R.Region)]
    return given if (regions or regions_file) else None


def _load(model, device, dtype, config=None, fp8="auto", allow_inexact=False):
    """The model: a loaded one as is, else load_model(spec) on ``device`` (auto: CUDA when available)."""
    if isinstance(model, torch.nn.Module):
        return model.eval()
    from ..loading import load_model
    from ..options import resolve_device

    return load_model(model, config=config, device=resolve_device(device), dtype=dtype, fp8=fp8,
                      allow_inexact=allow_inexact).eval()


def _window(model, requested: int | None) -> int:
    """The scoring window: ``requested``, or min(trained context, 8192), with a warning past the trained
    context (evo2lite.loading.scoring_window)."""
    from ..loading import scoring_window

    return scoring_window(model, requested, "--window")


# Windows x window x d_model per forward on a GPU when --batch-size is not given: 2 windows of 8,192 at
# evo2_7b's width 4,096. Measured on one H200 (benchmarks/score_vcf_gpu.py, RESULTS.md): 1.45 variants/s at
# a 19.8 GiB peak, against 1.50 at 72.4 GiB with 16 windows and 1.09 at 16.2 GiB with 1.
_GPU_BATCH_ELEMENTS = 2 * 8192 * 4096
CPU_BATCH_SIZE = 16


def _batch_size(model, window: int, requested: int | None) -> int:
    """--batch-size, or its default: 16 windows on a CPU; on a GPU as many as keep batch x window x width
    within _GPU_BATCH_ELEMENTS (1 to 16), so that activations stay a fraction of the weights' memory."""
    if requested is not None:
        return requested
    if model.device.type == "cpu":
        return CPU_BATCH_SIZE
    fits = _GPU_BATCH_ELEMENTS // (window * model.config.d_model)
    return max(1, min(CPU_BATCH_SIZE, fits))


def _rank_and_world(rank, world_size) -> tuple[int, int]:
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise Evo2LiteError(f"rank {rank} is not in a world of {world_size}")
    return rank, world_size


class _Tally:
    """Running counts over the written records (bounded by the number of statuses and contigs)."""

    _COMPARED = (V.STATUS_OK, V.STATUS_REF_MISMATCH, V.STATUS_N_RICH, V.STATUS_N_INSIDE, V.STATUS_IUPAC_IN_WINDOW,
                 V.STATUS_N_AT_VARIANT)

    def __init__(self, ctx: sites.Context):
        self.ctx = ctx
        self.records = 0
        self.statuses: Counter = Counter()
        self.absent: Counter = Counter()
        self.checked = self.mismatched = 0

    def add(self, variant: V.Variant, entries: list[list]) -> None:
        self.records += 1
        statuses = {entry[1] for entry in entries}
        self.statuses.update(entry[1] for entry in entries)
        if self.ctx.contig(variant.chrom) is None:
            self.absent[variant.chrom] += 1
        self.checked += bool(statuses.intersection(self._COMPARED))
        self.mismatched += V.STATUS_REF_MISMATCH in statuses

    def check(self, name: str, reference) -> None:
        """All records on contigs the reference lacks: an error naming both sides' contigs; some: a warning."""
        if not self.absent:
            return
        missing = sum(self.absent.values())
        listed = ", ".join(f"{c} ({n:,})" for c, n in self.absent.most_common(5)) + (
            ", ..." if len(self.absent) > 5 else "")
        if missing == self.records:
            have = list(reference.contigs)
            raise Evo2LiteError(f"none of the contigs of {name} ({listed}) is in the reference {reference.path}, "
                                f"which has {', '.join(have[:8])}{', ...' if len(have) > 8 else ''}: is it the "
                                "right reference (genome build, chr prefix)?")
        warn(f"{missing:,} of {self.records:,} records in {name} are on contigs not in {reference.path}: {listed}; "
             "they are kept with status contig_absent")

    def warn_ref_mismatches(self, name: str, reference: str) -> None:
        bad = self.mismatched
        if bad and bad >= max(5, _MAX_REF_MISMATCH_SHARE * self.checked):
            warn(f"{bad} of {self.checked} records in {name} have a REF that does not match {reference}: "
                 "is the VCF from another genome build (GRCh37 vs GRCh38)?")


def score_variants(vcf, reference, *, model=None, config=None, fp8: str = "auto", allow_inexact: bool = False,
                   window: int | None = None, reduce: str = "sum",
                   strand: str = "forward", batch_size: int | None = None, device: str | None = "auto",
                   dtype: str | None = None, threads: int | None = None, out=None, table=None,
                   resume: bool = False, force: bool = False, regions=None, regions_file=None,
                   progress: bool = True, rank: int | None = None, world_size: int | None = None,
                   keep_table: bool | None = None, score: str = "window", annotation=None,
                   tag: str | None = None) -> VariantScores:
    """Score every ALT of a VCF/BCF (``-`` = stdin) against a reference FASTA.

    model: None (the shipped default), anything ``load_model`` accepts (with ``config``, ``fp8``,
    ``allow_inexact``: evo2lite.loading.load_model), or a loaded model. window: bases
    per window, >= 16 (default: see ``_window``). reduce: "sum" | "mean". strand: "forward" | "both" |
    "transcript" (with ``annotation``, a BED with a strand column or a GTF/GFF: each site on the strand of
    the transcripts it overlaps, forward where none; recorded per ALT as EVO2_STRAND / column strand).
    score: "window" | "site" (also the SNV site score log P(ALT) - log P(REF) at the variant, EVO2_SITE /
    column site). tag: an Evo 2 phylogenetic tag prepended to every window (evo2lite.tags).
    batch_size: windows per forward pass (default: 16 on a CPU, sized to the model on a GPU: 2 for
    evo2_7b at window 8,192; see ``_batch_size``). out: annotated VCF (``.vcf``, ``.vcf.gz`` = bgzip + tabix, ``-`` =
    stdout). table: ``.tsv``, ``.tsv.gz`` / ``.tsv.bgz`` (bgzip + tabix index) or ``.parquet``, one row per
    ALT, with the run's provenance. regions:
    region strings (samtools syntax, 1-based inclusive) or Regions; regions_file: BED file(s) (0-based);
    both add up. resume: continue from the checkpoint next to the output. force: overwrite existing
    outputs / discard a checkpoint. rank, world_size: shard blocks over processes (default from torchrun's
    RANK / WORLD_SIZE; rank 0 merges and writes). keep_table: also return the table as a DataFrame
    (memory grows with the ALTs); default True only when neither out nor table is given.
    """
    from .. import __version__

    out = None if out is None else str(out)
    table = None if table is None else str(table)
    _validate(window, reduce, strand, batch_size, threads, out, table, score, annotation, tag)
    rank, world_size = _rank_and_world(rank, world_size)
    if world_size > 1 and out is None and table is None:
        raise Evo2LiteError("several ranks merge through the checkpoint next to the output: give -o or --table")
    if keep_table is None:
        keep_table = out is None and table is None
    outputs = [p for p in (out, table) if p is not None and p != "-"]
    for path in outputs:
        check_output(path, force or resume)  # with --resume, existing outputs are judged below
    region_list = _region_list(regions, regions_file)

    with contextlib.ExitStack() as stack:
        stack.enter_context(V.quiet_htslib())
        ref = stack.enter_context(_open_reference(reference, stack))
        source = stack.enter_context(V.VcfInput(vcf))
        if region_list is not None:
            region_list = R.resolve_regions(region_list, ref.contigs, ref.resolve)
        vf = source.open()
        stack.callback(vf.close)
        indexed = region_list is not None and vf.index is not None
        if threads is not None:
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(int(threads))
        loaded = _load(model, device, dtype, config, fp8, allow_inexact)
        win = _window(loaded, window)
        batch_size = _batch_size(loaded, win, batch_size)
        if tag:
            from ..tags import check_tag

            tag = check_tag(tag, loaded)
        transcripts = None
        if annotation is not None:
            from .score_vcf_strand import TranscriptStrands

            transcripts = TranscriptStrands(annotation, ref.resolve)
        extra = {"score": score, "annotation": None if annotation is None else _file_digest(annotation),
                 "tag": tag}
        fingerprint = _fingerprint(source, ref, loaded, win, reduce, strand, batch_size, region_list, indexed,
                                   extra)
        meta = {"version": __version__, "model": str(getattr(loaded, "source", "model")), "window": str(win),
                "reduce": reduce, "strand": strand, "dtype": str(loaded.dtype).removeprefix("torch."),
                "fp8": getattr(loaded, "provenance", {}).get("fp8", "off"),
                "reference": Path(str(reference)).name}
        if score != "window":
            meta["score"] = score
        if annotation is not None:
            meta["annotation"] = Path(str(annotation)).name
        if tag:
            meta["tag"] = tag
        if region_list is not None:
            meta["regions"] = " ".join(r.label for r in region_list[:20]) + (
                f" ... ({len(region_list)} regions)" if len(region_list) > 20 else "")
        meta["fingerprint"] = fingerprint

        ckpt_dir = checkpoint_dir(out, table, fingerprint)
        checkpoint = Checkpoint(ckpt_dir, rank, world_size) if ckpt_dir is not None else None
        done: dict[int, int] = {}  # finished block -> its offset in our checkpoint part
        if checkpoint is not None:
            found, offsets, _ = Checkpoint.read(checkpoint.path)
            if found is not None and not resume and not force:
                raise Evo2LiteError(f"{checkpoint.path} holds an interrupted run: add --resume to continue it, "
                                    "or --force to start over")
            if resume and found is None and outputs and all(Path(p).exists() for p in outputs):
                check_complete(out, fingerprint)
                note("outputs are already complete; nothing to do")
                return VariantScores(table=None, num_records=0, outputs=outputs, already_complete=True)
            if resume and found is not None:
                if found.get("fingerprint") != fingerprint:
                    raise Evo2LiteError(f"cannot resume: the inputs or options differ from the run checkpointed "
                                        f"in {checkpoint.directory}; rerun the same command, or pass --force "
                                        "to start over")
                done = offsets
            elif resume:
                for path in outputs:
                    check_overwrite(path, force)
            done = checkpoint.start(fingerprint, done)
            stack.callback(checkpoint.close)

        ctx = sites.Context(ref, loaded, win, reduce, strand, batch_size, score, transcripts, tag or "")
        if progress:
            from ..progress import progress_bar, progress_shown

            label = "scoring variants" + (f" ({len(done)} blocks done before)" if done else "")
            # rank 0 counts the records it writes (all of them), other ranks those they score; the raw
            # counting pass is made only for a bar that is drawn
            total = (_count_records(source) if rank == 0 and region_list is None and progress_shown()
                     else None)
            advance = stack.enter_context(progress_bar(label, total=total, unit="variants"))
        else:
            advance = lambda n: None  # noqa: E731
        target_rows = _BLOCK_BATCHES * batch_size
        matched: set[int] = set()
        region_set = R.RegionSet(region_list) if region_list is not None and not indexed else None

        def records(vf_):
            if indexed:
                return source.fetch(vf_, region_list, matched)
            scan = source.records(vf_)
            return scan if region_set is None else ((i, rec) for i, rec in scan if _overlaps(region_set, rec))

        def own_results(number: int, block: list) -> dict[int, list] | None:
            """This rank's results of a block: from the checkpoint, or scored now; None for other ranks'."""
            if number % world_size != rank:
                return None
            if number in done:
                return Checkpoint.load(checkpoint.path, done[number])
            results = sites.score_block(block, ctx)
            if checkpoint is not None:
                checkpoint.append(number, results)
            if rank != 0:
                advance(len(block))
            return results

        # Rank 0 writes every block in input order as it goes; another rank's block waits in `pending`
        # (at most _MAX_PENDING_PER_RANK x world_size blocks) until that rank's checkpoint part has it.
        columns = TABLE_COLUMNS + ["site"] * (score == "site") + ["strand"] * (strand == "transcript")
        writers = Outputs(stack, out, table, meta, keep_table, columns) if rank == 0 else None
        followers = {r: PartFollower(Checkpoint.part(checkpoint.directory, r, world_size), fingerprint)
                     for r in range(1, world_size)} if world_size > 1 else {}
        pending: collections.deque = collections.deque()
        tally = _Tally(ctx)

        def flush(wait: bool) -> None:
            while pending:
                number, block, results = pending[0]
                if results is None:
                    results = followers[number % world_size].results(number, wait)
                    if results is None:
                        return
                pending.popleft()
                for variant, line in block:
                    writers.write(variant, line, results[variant.index])
                    tally.add(variant, results[variant.index])
                advance(len(block))

        try:
            for number, block in sites.blocks(records(vf), target_rows):
                results = own_results(number, block)
                if writers is not None:
                    pending.append((number, block, results))
                    flush(wait=len(pending) > _MAX_PENDING_PER_RANK * world_size)
        except KeyboardInterrupt:
            if checkpoint is not None:
                note(f"interrupted; finished blocks are in {checkpoint.directory}: rerun with --resume to continue")
            raise
        except Evo2LiteError:
            # a malformed input found mid-stream: fixing it changes the fingerprint, so the checkpoint is void
            if checkpoint is not None:
                checkpoint.close()
                shutil.rmtree(checkpoint.directory, ignore_errors=True)
            raise
        if checkpoint is not None:
            checkpoint.finish()
        if rank != 0:
            return VariantScores(table=None, num_records=0, outputs=[])
        flush(wait=True)
        for follower in followers.values():  # every part done (and of this run) before it is removed
            follower.wait_done()

        try:
            tally.check(source.name, ref)
        except Evo2LiteError:
            if checkpoint is not None:
                shutil.rmtree(checkpoint.directory, ignore_errors=True)
            raise
        if region_list is not None:
            unmatched = ([r for k, r in enumerate(region_list) if k not in matched] if indexed
                         else region_set.unmatched())
            if unmatched:
                warn(f"{len(unmatched)} of {len(region_list)} regions match no record of {source.name}: "
                     + ", ".join(r.label for r in unmatched[:5]) + (", ..." if len(unmatched) > 5 else ""))
        _warn_contig_lengths(vf.header, ref, source.name)
        frame = writers.finish(output_header(vf.header, meta, win, reduce, strand, columns))
        tally.warn_ref_mismatches(source.name, str(reference))
        if checkpoint is not None:
            shutil.rmtree(checkpoint.directory, ignore_errors=True)
        return VariantScores(table=frame, num_records=tally.records, status_counts=dict(tally.statuses),
                             outputs=outputs)


def _count_records(source: V.VcfInput) -> int | None:
    """The data lines of a text VCF (plain or BGZF) by one raw pass at zlib speed, without parsing: the
    progress bar's total. None for BCF (binary records)."""
    import gzip

    path = source.path
    with open(path, "rb") as fh:
        magic = fh.read(2)
    fh = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    lines = headers = 0
    previous = b"\n"  # the byte before the current block: a line starts after a newline
    with fh:
        first = True
        for block in iter(lambda: fh.read(1 << 22), b""):
            if first and block.startswith(b"BCF"):
                return None
            first = False
            lines += block.count(b"\n")
            headers += block.count(b"\n#") + (previous == b"\n" and block[:1] == b"#")
            previous = block[-1:]
    if previous not in (b"\n", b""):
        lines += 1  # a last line without a newline
    return max(0, lines - headers)


def _overlaps(region_set: R.RegionSet, rec) -> bool:
    """Whether a record's span (POS to INFO/END, as tabix sees it) overlaps the regions."""
    try:
        return region_set.overlaps(rec.chrom, rec.start, rec.stop)
    except (ValueError, OSError):  # an unreadable field: its VariantRecord statuses will tell
        return True


def _open_reference(path, stack: contextlib.ExitStack):
    """A ReferenceGenome; a plain-gzip FASTA (faidx cannot index it) is recompressed to BGZF in a temp folder."""
    from ..pipelines.fasta import ReferenceGenome, detect_compression, to_bgzf

    if Path(path).is_file() and detect_compression(path) == "gzip":
        note(f"{path} is plain gzip, which faidx cannot index: recompressing it to BGZF in a temporary folder; "
             f"`zcat {path} | bgzip > ref.fa.gz` once avoids this")
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="evo2lite-ref-"))
        path = to_bgzf(path, Path(folder) / Path(path).name)
    return ReferenceGenome(path)


def _model_identity(model) -> dict:
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            t = tensor.detach().double()
            digest.update(f"{name}:{tuple(t.shape)}:{t.sum().item():.17g}:{t.abs().sum().item():.17g}".encode())
    return {"source": str(getattr(model, "source", type(model).__name__)),
            "config": model.config.to_dict() if hasattr(model.config, "to_dict") else repr(model.config),
            "dtype": str(model.dtype), "device": model.device.type, "weights": digest.hexdigest()}


def _file_digest(path) -> str:
    try:
        return hashlib.sha256(Path(str(path)).read_bytes()).hexdigest()
    except OSError as exc:
        raise Evo2LiteError(f"--annotation {path}: cannot read it ({exc.strerror or exc})") from None


def _fingerprint(source, ref, model, window, reduce, strand, batch_size, regions, indexed, extra=None) -> str:
    from .. import __version__

    data = {
        "version": __version__,
        "input": source.sha256(),
        "reference": [Path(ref.path).stat().st_size, sorted(ref.contigs.items())],
        "model": _model_identity(model),
        # batch_size decides the batches and so the last bits of the scores; the number of ranks does
        # not (blocks are fixed), and each rank keeps its own checkpoint file anyway. Reading through
        # the index numbers the records differently from a scan, so it is part of the run too.
        "options": {"window": window, "reduce": reduce, "strand": strand, "batch_size": batch_size,
                    "regions": None if regions is None else [(r.contig, r.start, r.end) for r in regions],
                    "indexed": indexed, **(extra or {})},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _warn_contig_lengths(header, ref, name: str) -> None:
    for contig, length in V.header_contig_lengths(header).items():
        try:
            resolved = ref.resolve(contig)
        except Evo2LiteError:
            continue
        if ref.contigs[resolved] != length:
            warn(f"{name}: ##contig {contig} has length {length} but {resolved} in {ref.path} has "
                 f"{ref.contigs[resolved]}: are the VCF and the reference the same genome build?")
