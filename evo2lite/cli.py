"""The evo2lite command line: parse options, call one API function, write output. No tensor code here;
heavy imports stay inside the commands so `evo2lite --help` is instant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import Evo2LiteError, cli_errors

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Byte-level DNA language models (StripedHyena 2 / Evo 2): score variants, embed "
                       "and generate DNA.")

ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="Model directory, Evo 2 .pt (with --config), or hf:REPO. Default: the shipped model.")]
ConfigOpt = Annotated[Optional[str], typer.Option(
    "--config", help="YAML config (or preset name) for an Evo 2 .pt checkpoint.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N.")]
DtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", help="float32 or bfloat16 (default: float32 on CPU, bfloat16 on CUDA).")]


@app.command()
@cli_errors
def info(model: Annotated[Optional[str], typer.Argument(
            help="A preset name (shape only, no weights needed) or a model spec as for --model.")] = None,
         config: ConfigOpt = None) -> None:
    """Show a model's architecture, exact parameter count and where its weights come from."""
    from .config import PRESETS

    if model in PRESETS:
        cfg, source = PRESETS[model], "preset (shape only, no weights)"
    else:
        from .checkpoint import load_state

        cfg, _, source = load_state(model, config)
    import torch

    from .model import StripedHyena2

    with torch.device("meta"):  # counts the real modules without allocating any weights
        num_params = sum(p.numel() for p in StripedHyena2(cfg).parameters())
    kinds = {k: cfg.layout.count(k) for k in "SMLA"}
    typer.echo(f"model:        {cfg.name or '-'}")
    typer.echo(f"source:       {source}")
    typer.echo(f"layout:       {cfg.layout} ({cfg.num_blocks} blocks: {kinds['S']} SE, {kinds['M']} MR, "
               f"{kinds['L']} LR, {kinds['A']} attention)")
    typer.echo(f"d_model:      {cfg.d_model}   heads: {cfg.num_heads} x {cfg.head_dim}   MLP: {cfg.d_mlp}")
    typer.echo(f"filters:      featurizer {cfg.featurizer_len}, SE {cfg.se_filter_len} x {cfg.num_se_groups} "
               f"groups, MR {cfg.mr_filter_len} x {cfg.num_mr_groups} groups, LR {cfg.state_size} poles")
    typer.echo(f"rotary:       base {cfg.rotary_base:g}, interpolation x{cfg.rotary_scale:g}")
    typer.echo(f"context:      {cfg.context_len:,} (trained)")
    typer.echo(f"parameters:   {num_params:,} ({num_params / 1e6:,.0f} M)")


@app.command()
@cli_errors
def convert(source: Annotated[str, typer.Argument(help="An Evo 2 .pt / .pt.part0, or an evo2lite directory.")],
            output: Annotated[Path, typer.Option("-o", "--output", help="Output directory (or .pt with --to vortex).")],
            config: ConfigOpt = None,
            to: Annotated[str, typer.Option("--to", help="evo2lite (default) or vortex.")] = "evo2lite",
            force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")] = False) -> None:
    """Import an Evo 2 / vortex checkpoint into evo2lite's format, or export one back (--to vortex)."""
    from .checkpoint import convert as convert_checkpoint
    from .io import check_overwrite

    check_overwrite(output, force)
    convert_checkpoint(source, output, config=config, to=to)
    typer.echo(f"wrote {output}", err=True)


@app.command()
@cli_errors
def score(fasta: Annotated[Path, typer.Argument(help="FASTA or GenBank (plain, gzip or BGZF).")],
          output: Annotated[Optional[Path], typer.Option("-o", "--output", help="TSV output (default: stdout).")] = None,
          per_position: Annotated[Optional[Path], typer.Option(
              "--per-position", help="Per-base log-probs: .bedGraph/.bg or .npz.")] = None,
          context: Annotated[Optional[int], typer.Option(
              "--context", help="Window W for long records (default: the model's trained context).")] = None,
          batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
          model: ModelOpt = None, config: ConfigOpt = None, device: DeviceOpt = "cpu",
          dtype: DtypeOpt = None, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Per-sequence log-likelihood (natural log) of every record: name, length, sum and mean log-prob."""
    from .apps.score import score_sequences, write_per_position, write_score_table
    from .checkpoint import load_model
    from .io import atomic_path, check_output
    from .pipelines.fasta import read_sequences
    from .progress import progress_bar

    for path in (output, per_position):
        if path is not None:
            check_output(path, force)
    records = [(r.name, r.seq) for r in read_sequences(fasta)]
    net = load_model(model, config=config, device=device, dtype=dtype)
    total = sum(max(len(seq) - 1, 0) for _, seq in records)
    with progress_bar("scoring", total=total, unit="bases") as advance:
        results = score_sequences(net, records, batch_size=batch_size, context=context, progress=advance)
    if output is None:
        write_score_table(results, sys.stdout)
    else:
        with atomic_path(output) as tmp, open(tmp, "w") as out:
            write_score_table(results, out)
    if per_position is not None:
        write_per_position(results, per_position)


def _register_app_commands() -> None:
    # each app's command lives beside its API; their modules import only typer at load time
    from .apps.embed_cli import embed_command
    from .apps.generate_cli import generate_command
    from .apps.score_vcf_cli import score_vcf_command
    from .apps.train_cli import train_command

    app.command("score-vcf")(score_vcf_command)
    app.command("generate")(generate_command)
    app.command("embed")(embed_command)
    app.command("train")(train_command)


_register_app_commands()

data_app = typer.Typer(no_args_is_help=True, help="Training corpora: build byte shards from a manifest.")
app.add_typer(data_app, name="data")


@data_app.command("build")
@cli_errors
def data_build(manifest: Annotated[Path, typer.Argument(help="Corpus manifest (YAML).")],
               output: Annotated[Path, typer.Option("-o", "--output", help="Output folder for the shards.")],
               cache_dir: Annotated[Optional[Path], typer.Option(
                   "--cache-dir", help="Where downloaded sources are kept between builds.")] = None,
               overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing corpus.")] = False
               ) -> None:
    """Obtain, verify (sha256) and pack every source of a manifest into train/val/test byte shards."""
    from .pipelines.corpus import build_corpus

    summary = build_corpus(manifest, output, progress=True, cache_dir=cache_dir, overwrite=overwrite)
    typer.echo(f"wrote {output} ({len(summary.get('sources', []))} sources)", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
