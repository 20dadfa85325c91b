"""The `evo2lite score-vcf` command: parse options, call score_variants, report. No tensor code here,
and nothing heavy imported at module level, so `evo2lite --help` stays instant.

cli.py registers it with ``app.command("score-vcf")(score_vcf_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors

__all__ = ["score_vcf_command"]


@cli_errors
def score_vcf_command(
    vcf: Annotated[str, typer.Argument(help="VCF, VCF.gz (BGZF or gzip), BCF, or - for stdin.")],
    reference: Annotated[Path, typer.Option("--reference", "-r", help="Reference FASTA (plain or BGZF); "
                                            "a .fai is built if missing.")],
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Annotated VCF: .vcf, .vcf.gz (bgzip + "
                                               "tabix index) or - for stdout.")] = None,
    table: Annotated[Optional[Path], typer.Option("--table", help="Also a table, one row per ALT "
                                                  "(chrom pos id ref alt score status): .tsv or .parquet.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model directory, Evo 2 checkpoint or "
                                                 "hf:REPO; default the shipped model.")] = None,
    window: Annotated[Optional[int], typer.Option(help="Window in bases (>= 16), centred on the variant; "
                                                  "default the model's trained context.")] = None,
    reduce: Annotated[str, typer.Option(help="sum or mean of the window's next-token log-probs.")] = "sum",
    strand: Annotated[str, typer.Option(help="forward, or both (mean of forward and reverse "
                                        "complement).")] = "forward",
    regions: Annotated[Optional[str], typer.Option(help="Only these regions: a BED file or "
                                                   "chr:start-end[,...] (1-based).")] = None,
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[Optional[str], typer.Option(help="float32 or bfloat16; default float32 on CPU, "
                                                 "bfloat16 on GPU.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the checkpoint next to the "
                                         "output (or start if there is none).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite outputs; discard a checkpoint.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar on stderr.")] = True,
) -> None:
    """Score the effect of every ALT in a VCF: log-likelihood of the ALT window minus the REF window."""
    import os

    from ..errors import Evo2LiteError
    from .score_vcf import score_variants

    if out is None and table is None:
        raise Evo2LiteError("nothing to write: give -o OUT.vcf.gz and/or --table OUT.tsv")
    # Under torchrun each rank takes its own GPU.
    if device in ("cuda", "auto") and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{os.environ['LOCAL_RANK']}"
    result = score_variants(vcf, reference, model=model, window=window, reduce=reduce, strand=strand,
                            batch_size=batch_size, device=device, dtype=dtype, threads=threads, out=out,
                            table=table, resume=resume, force=force, regions=regions, progress=progress)
    if result.status_counts:
        from ..log import note

        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.status_counts.items(), key=lambda kv: -kv[1]))
        note(f"{result.num_records} records, {sum(result.status_counts.values())} ALTs: {counts}")
