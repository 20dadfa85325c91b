"""`evo2lite embed`: the command. Parses options, calls `embed_file`, reports; heavy imports stay inside.
Registered by evo2lite/cli.py as `app.command("embed")(embed_command)`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors


@cli_errors
def embed_command(
    input: Annotated[str, typer.Argument(
        help="FASTA or GenBank (plain, gzip or BGZF), '-' for stdin; with --regions, the reference FASTA "
             "(plain or BGZF).", show_default=False)],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Output file; the format follows the extension: .h5/.hdf5, .npz, or .parquet "
                               "(pooled vectors only).", show_default=False)],
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
    regions: Annotated[Optional[list[str]], typer.Option(
        "--regions", "-r", help="Embed regions of INPUT: a BED file (0-based) or chr:start-end (1-based "
                                "inclusive, as samtools); repeatable.", show_default=False)] = None,
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
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Model directory, Evo 2 .pt (with --config), or hf:REPO. Default: the shipped "
                              "model.", show_default=False)] = None,
    config: Annotated[Optional[str], typer.Option(
        "--config", help="YAML config (or preset name) for an Evo 2 .pt checkpoint.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[Optional[str], typer.Option(
        "--dtype", help="float32 or bfloat16 (default: float32 on CPU, bfloat16 on CUDA).",
        show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False,
) -> None:
    """Embeddings of every sequence from any layer: per token, pooled or per window, of any length, exactly
    (streamed chunk by chunk with the model's state; the result does not depend on --chunk-size)."""
    from ..log import note
    from ..progress import progress_bar
    from .embed_io import embed_file

    layers = [name for item in layer for name in item.split(",") if name.strip()] if layer else None
    with progress_bar("embedding", total=None, unit="bases") as advance:
        summary = embed_file(input, output, model=model, config=config, regions=list(regions or ()),
                             layers=layers, pool=pool, stride=stride, rc_average=rc_average,
                             chunk_size=chunk_size, window_mode=window_mode, window_overlap=window_overlap,
                             batch_size=batch_size, out_dtype=out_dtype, compression=compression, force=force,
                             device=device, dtype=dtype, progress=advance)
    rate = summary["bases"] * (2 if rc_average else 1) / max(summary["seconds"], 1e-9)
    note(f"embedded {summary['records']} record(s), {summary['bases']:,} bases, layer(s) "
         f"{', '.join(summary['layers'])} in {summary['seconds']:.1f} s ({rate:,.0f} bases/s) -> {output}")
