"""The `evo2lite mutagenize` command: parse options, call mutagenize, report. No tensor code here, and
nothing heavy imported at module level, so `evo2lite --help` stays instant.

cli.py registers it with ``app.command("mutagenize")(mutagenize_command)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors
from ..options import (AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, ForceOpt, Fp8Opt, ModelOpt, ProgressOpt,
                       ReduceOpt, ThreadsOpt, VariantReferenceOpt)

__all__ = ["mutagenize_command"]


@cli_errors
def mutagenize_command(
    reference: VariantReferenceOpt,
    region: Annotated[str, typer.Option("--region", "-r", help="chr:start-end, 1-based inclusive "
                                        "(samtools syntax).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Table #chrom pos ref alt score site status "
                                         "strand: "
                                         ".tsv.gz or .tsv.bgz (bgzip + tabix index) or .tsv.")],
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also a heatmap (position x ALT) of the score "
                                                 "(--score site: of the site score): .png, .svg or "
                                                 ".pdf.")] = None,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
    window: Annotated[Optional[int], typer.Option(help="Window in bases (>= 16), centred on the variant, as "
                                                  "score-vcf; default min(trained context, 8192).")] = None,
    tile: Annotated[int, typer.Option(help="Positions that share one prefix and one reference row; 1 = "
                                      "exactly score-vcf's scores, more = faster, approximate "
                                      "(docs/mutagenize.md).")] = 1,
    downstream: Annotated[Optional[int], typer.Option(help="Sum only the terms of the variant and this many "
                                                      "bases after it (faster, approximate); default the "
                                                      "window's end.")] = None,
    reduce: ReduceOpt = "sum",
    score: Annotated[str, typer.Option("--score", help="window: the window score and the site score "
                                       "log P(ALT)/P(REF); site: only the site score, one reference pass per "
                                       "tile (much faster).")] = "window",
    strand: Annotated[str, typer.Option(help="forward, reverse (score on the reverse complement) or "
                                        "transcript (the strand of the --annotation feature a position "
                                        "lies in; forward outside).")] = "forward",
    annotation: Annotated[Optional[Path], typer.Option(help="Transcripts for --strand transcript: BED with a "
                                                       "strand column, or GTF/GFF (transcript/mRNA "
                                                       "lines).")] = None,
    deletions: Annotated[bool, typer.Option("--deletions", help="Also every 1-bp deletion (VCF style: POS the "
                                            "base before), scored exactly as score-vcf.")] = False,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 16,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    force: ForceOpt = False,
    progress: ProgressOpt = True,
) -> None:
    """Saturation mutagenesis: score all three SNVs at every position of a region, as score-vcf would."""
    from collections import Counter

    from ..errors import Evo2LiteError
    from ..io import check_output
    from ..log import note
    from .mutagenize import mutagenize

    if plot is not None:  # before the run: a bad --plot must not cost one
        from importlib.util import find_spec

        from ..plots import FORMATS

        if plot.suffix.lower() not in FORMATS:
            raise Evo2LiteError(f"--plot {plot}: a figure is written as .png, .svg or .pdf")
        if find_spec("matplotlib") is None:
            raise Evo2LiteError("--plot needs matplotlib: pip install 'evo2lite[plots]'")
        check_output(plot, force)

    rows = mutagenize(reference, region, model=model, config=config, fp8=fp8, allow_inexact=allow_inexact,
                      window=window, tile=tile, downstream=downstream, reduce=reduce, mode=score, strand=strand,
                      annotation=annotation, deletions=deletions, batch_size=batch_size, device=device, dtype=dtype,
                      threads=threads, out=output, force=force, progress=progress)
    if plot is not None:
        from ..plots import save_figure
        from .mutagenize_plot import mutagenesis_heatmap

        save_figure(mutagenesis_heatmap(rows, value="site" if score == "site" else "score", title=region), plot)
    counts = Counter(r.status for r in rows)
    note(f"{len(rows)} variants: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
