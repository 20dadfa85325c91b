"""The `evo2lite score-vcf` command: parse options, call score_variants, report. No tensor code here,
and nothing heavy imported at module level, so `evo2lite --help` stays instant.

cli.py registers it with ``app.command("score-vcf")(score_vcf_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors
from ..options import (AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, Fp8Opt, ModelOpt, ProgressOpt, ReduceOpt,
                       RegionsFileOpt, RegionsOpt, ThreadsOpt, VariantReferenceOpt)

__all__ = ["score_vcf_command"]


@cli_errors
def score_vcf_command(
    vcf: Annotated[str, typer.Argument(help="VCF, VCF.gz (BGZF or gzip), BCF, or - for stdin.")],
    reference: VariantReferenceOpt,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Annotated VCF: .vcf, .vcf.gz (bgzip "
                                                  "+ tabix index) or - for stdout.")] = None,
    table: Annotated[Optional[Path], typer.Option("--table", help="Also a table, one row per ALT "
                                                  "(chrom pos id ref alt score status [site] [strand]) with "
                                                  "the run's provenance: .tsv, .tsv.gz / .tsv.bgz (bgzip + "
                                                  "tabix index) or .parquet.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
    window: Annotated[Optional[int], typer.Option(help="Window in bases (>= 16), centred on the variant; "
                                                  "default min(trained context, 8192).")] = None,
    reduce: ReduceOpt = "sum",
    strand: Annotated[str, typer.Option(help="forward, both (mean of forward and reverse complement) or "
                                        "transcript (the strand of the --annotation transcripts a variant "
                                        "overlaps; forward where none).")] = "forward",
    annotation: Annotated[Optional[Path], typer.Option(help="Transcripts for --strand transcript: BED with a "
                                                       "strand column, or GTF/GFF (transcript/mRNA "
                                                       "lines).")] = None,
    score: Annotated[str, typer.Option("--score", help="window: the window delta; site: also the SNV site "
                                       "score log P(ALT)/P(REF) at the variant (EVO2_SITE, column site), "
                                       "from the same forward pass.")] = "window",
    tag: Annotated[Optional[str], typer.Option("--tag", help="Evo 2 phylogenetic tag |d__...;...;s__...| run "
                                               "before every window as context (`evo2lite tag` builds "
                                               "one).")] = None,
    regions: RegionsOpt = None,
    regions_file: RegionsFileOpt = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Windows per forward pass [default: 16 on a CPU; "
                                                      "on a GPU sized to the model, 2 for evo2_7b at window "
                                                      "8192].")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint next to the "
                                         "output (or start if there is none).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite outputs; discard a checkpoint.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Score the effect of every ALT in a VCF: log-likelihood of the ALT window minus the REF window."""
    import os

    from ..errors import Evo2LiteError
    from ..options import check_options
    from .score_vcf import score_variants

    check_options(batch_size=batch_size, threads=threads)
    if output is None and table is None:
        raise Evo2LiteError("nothing to write: give -o OUT.vcf.gz and/or --table OUT.tsv")
    # Under torchrun each rank takes its own GPU.
    if device in ("cuda", "auto") and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{os.environ['LOCAL_RANK']}"
    result = score_variants(vcf, reference, model=model, config=config, fp8=fp8, allow_inexact=allow_inexact,
                            window=window, reduce=reduce, strand=strand,
                            batch_size=batch_size, device=device, dtype=dtype, threads=threads, out=output,
                            table=table, resume=resume, force=force, regions=regions, regions_file=regions_file,
                            progress=progress, score=score, annotation=annotation, tag=tag)
    if result.status_counts:
        from ..log import note

        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.status_counts.items(), key=lambda kv: -kv[1]))
        note(f"{result.num_records} records, {sum(result.status_counts.values())} ALTs: {counts}")
