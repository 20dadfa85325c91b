"""`evo2lite embed`: the command. Parses options, calls `embed_file`, reports; heavy imports stay inside.
Registered by evo2lite/cli.py as `app.command("embed")(embed_command)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors
from ..options import (AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, ForceOpt, Fp8Opt, ModelOpt, ProgressOpt,
                       ReferenceOpt, RegionsFileOpt, RegionsOpt, ThreadsOpt)


@cli_errors
def embed_command(
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output file; the format follows the extension: .h5/.hdf5, .npz, or .parquet "
                               "(pooled vectors only).", show_default=False)],
    input: Annotated[Optional[str], typer.Argument(
        help="FASTA or GenBank (plain, gzip or BGZF), '-' for stdin; with regions, the reference FASTA "
             "(plain or BGZF), or give that as -f/--reference.", show_default=False)] = None,
    layer: Annotated[Optional[list[str]], typer.Option(
        "--layer", "-l", help="Layer to embed from, repeatable or comma-separated: blocks.N (residual stream "
                              "after block N), blocks.N.mlp (MLP output), final. Evo 2 names (blocks.N.mlp.l3, "
                              "blocks-N, norm) work. Default: the residual stream at 84% depth (blocks.26 "
                              "on Evo 2 7B), see docs/embed.md.", show_default=False)] = None,
    pool: Annotated[Optional[str], typer.Option(
        "--pool", help="mean, max or last: one vector per record. Default: one vector per token.",
        show_default=False)] = None,
    stride: Annotated[Optional[int], typer.Option(
        "--stride", help="Mean over consecutive windows of N bases: one vector per window.",
        show_default=False)] = None,
    rc_average: Annotated[bool, typer.Option(
        "--rc-average", help="Also embed the reverse complement and average it, flipped back onto forward "
                             "coordinates, with the forward strand.")] = False,
    regions: RegionsOpt = None,
    regions_file: RegionsFileOpt = None,
    reference: ReferenceOpt = None,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", help="Tokens per forward step. Exact mode: any value gives the same embeddings; "
                             "bigger is faster and uses more activation memory.")] = 8192,
    window_mode: Annotated[bool, typer.Option(
        "--window-mode", help="Approximate: independent overlapping windows of --chunk-size tokens instead "
                              "of exact streaming; memory no longer grows with the length.")] = False,
    window_overlap: Annotated[Optional[int], typer.Option(
        "--window-overlap", help="Window mode: minimum left context of every token (default: half the "
                                 "window).", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", help="Records no longer than --chunk-size (or windows) run this many at a time.")] = 1,
    out_dtype: Annotated[str, typer.Option("--out-dtype", help="float32 or float16.")] = "float32",
    compression: Annotated[str, typer.Option("--compression", help="gzip, lzf or none.")] = "gzip",
    model: ModelOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
    force: ForceOpt = False,
    context_parallel: Annotated[int, typer.Option(
        "--context-parallel", help="Split each record across the N ranks of a torchrun job (N = "
                                   "--nproc-per-node): exact, one pass per record, --chunk-size unused; rank 0 "
                                   "writes.")] = 1,
    progress: ProgressOpt = True,
    tag: Annotated[Optional[str], typer.Option(
        "--tag", help="Evo 2 phylogenetic tag |d__...;...;s__...| run before each record as context; its "
                      "tokens get no embedding rows (`evo2lite tag` builds one).")] = None,
) -> None:
    """Embeddings of every sequence from any layer: per token, pooled or per window, of any length, exactly
    (streamed chunk by chunk with the model's state; the result does not depend on --chunk-size)."""
    from ..errors import InputError
    from ..log import note
    from ..options import apply_threads, check_options, resolve_device
    from .embed_io import embed_file

    check_options(InputError, chunk_size=chunk_size, batch_size=batch_size, stride=stride,
                  window_overlap=window_overlap)
    apply_threads(threads)
    if reference is not None and input is not None:
        raise InputError("give the reference once: as INPUT or as -f/--reference, not both")
    source = reference if reference is not None else input
    if source is None:
        raise InputError("no input: give a FASTA (or '-' for stdin), or -f/--reference FASTA with -r/-R regions")
    if reference is not None and not (regions or regions_file):
        raise InputError("-f/--reference is the FASTA that -r/--regions or -R/--regions-file are read from; "
                         "give regions, or pass a FASTA to embed whole as INPUT")
    layers = [name for item in layer for name in item.split(",") if name.strip()] if layer else None
    args = dict(model=model, config=config, regions=list(regions or ()), regions_files=list(regions_file or ()),
                layers=layers, pool=pool, stride=stride, rc_average=rc_average, chunk_size=chunk_size,
                window_mode=window_mode, window_overlap=window_overlap, batch_size=batch_size,
                out_dtype=out_dtype, compression=compression, force=force, device=resolve_device(device),
                dtype=dtype, fp8=fp8, allow_inexact=allow_inexact,
                progress=True if progress else None)
    if tag is not None:
        from ..tags import check_tag

        if context_parallel > 1:
            raise InputError("--tag is not implemented with --context-parallel")
        args["tag"] = check_tag(tag)
    if context_parallel > 1:  # torchrun: each record split over the ranks, rank 0 writes
        from ..parallel.inference import embed_file_context_parallel

        summary = embed_file_context_parallel(context_parallel, source, output, **args)
        if summary is None:
            return
    else:
        summary = embed_file(source, output, **args)
    rate = summary["bases"] * (2 if rc_average else 1) / max(summary["seconds"], 1e-9)
    note(f"embedded {summary['records']} record(s), {summary['bases']:,} bases, layer(s) "
         f"{', '.join(summary['layers'])} in {summary['seconds']:.1f} s ({rate:,.0f} bases/s) -> {output}")
