"""`evo2lite plot`: figures from the command line (the same functions as `evo2lite.plots`).
Registered by evo2lite/cli.py as `app.add_typer(plot_app, name="plot")`; heavy imports stay inside."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError, cli_errors
from ..options import AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, ForceOpt, Fp8Opt, ModelOpt, ThreadsOpt

plot_app = typer.Typer(no_args_is_help=True, help="Figures (PNG, SVG or PDF by the output's extension).")


@plot_app.command("track")
@cli_errors
def track_command(
    fasta: Annotated[Optional[str], typer.Argument(
        help="Reference FASTA (plain or BGZF; or give it with -f).", show_default=False)] = None,
    reference: Annotated[Optional[str], typer.Option(
        "--reference", "-f", help="Reference FASTA, instead of the argument.", show_default=False)] = None,
    regions: Annotated[Optional[list[str]], typer.Option(
        "--regions", "--region", "-r", help="The region to draw, chr:start-end (1-based inclusive, as samtools).",
        show_default=False)] = None,
    variant: Annotated[Optional[str], typer.Option(
        "--variant", help="Also score the window carrying this variant: CHR:POS:REF:ALT or '[CHR:]POS:REF>ALT' "
                          "(quote the '>'), POS 1-based as in a VCF, e.g. 20:1546804:G:A; draws REF, ALT and "
                          "their difference.",
        show_default=False)] = None,
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Figure file: .png, .svg or .pdf.", show_default=False)] = ...,
    smooth: Annotated[int, typer.Option("--smooth", help="Running mean over N bases for the REF/ALT lines.")] = 1,
    flank: Annotated[int, typer.Option(
        "--flank", help="Bases of left context scored before the region (not drawn).")] = 512,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
    force: ForceOpt = False,
) -> None:
    """Per-base log-likelihood track over a region, and with --variant the ALT track and ALT - REF."""
    from ..checkpoint import load_model
    from ..io import check_output
    from ..log import note
    from ..options import apply_threads, resolve_device
    from ..pipelines.fasta import ReferenceGenome
    from ..pipelines.regions import parse_regions, resolve_regions
    from ..plots import FORMATS, likelihood_track, likelihood_track_data, parse_variant, save_figure

    if (fasta is None) == (reference is None):
        raise InputError("give the reference FASTA once: as the argument or with -f/--reference")
    if not regions or len(regions) != 1:
        raise InputError("give exactly one region with -r chr:start-end (1-based, inclusive)")
    if output.suffix.lower() not in FORMATS:
        raise InputError(f"-o {output}: the figure must end in .png, .svg or .pdf")
    if smooth < 1:
        raise InputError(f"--smooth must be at least 1, got {smooth}")
    if flank < 0:
        raise InputError(f"--flank must be at least 0, got {flank}")
    if variant is not None:
        parse_variant(variant)  # a malformed variant fails before the model loads
    check_output(output, force)
    apply_threads(threads)
    device = resolve_device(device)
    with ReferenceGenome(fasta or reference) as genome:
        (region,) = resolve_regions(parse_regions(regions), genome.contigs, genome.resolve)
        if region.end - region.start < 2:
            raise InputError(f"region {region.label} is too short to draw: give at least 2 bases")
        net = load_model(model, config=config, device=device, dtype=dtype, fp8=fp8, allow_inexact=allow_inexact)
        track = likelihood_track_data(net, genome, region.contig, region.start, region.end, variant, flank=flank)
    save_figure(likelihood_track(track, smooth=smooth), output)
    extra = f", ALT - REF {track.total_delta:+.3f} nats" if track.variant else ""
    note(f"drew {region.contig}:{region.start + 1}-{region.end} ({len(track.ref_logp):,} bases{extra}) -> {output}")
