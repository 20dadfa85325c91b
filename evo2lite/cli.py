"""The evo2lite command line: parse options, call one API function, write output. No tensor code here;
heavy imports stay inside the commands so `evo2lite --help` is instant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from . import __version__
from .errors import Evo2LiteError, cli_errors, usage_error_line
from .options import AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, ForceOpt, Fp8Opt, ModelOpt
from .options import ThreadsOpt


class _Group(TyperGroup):
    """The top-level command group: a usage error (unknown option, bad or missing value) is one line on
    stderr and exit code 2, as the README promises, instead of click/rich's boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:  # typer >= 0.22 carries its own copy of click
            from typer._click import exceptions
        except ImportError:
            from click import exceptions
        no_args = getattr(exceptions, "NoArgsIsHelpError", ())
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except no_args as exc:  # bare `evo2lite` or `evo2lite data`: the help, as before
            typer.echo(exc.ctx.get_help(), err=True)
            rv = 2
        except exceptions.ClickException as exc:
            print(usage_error_line(exc), file=sys.stderr, flush=True)
            rv = exc.exit_code
        except typer.Abort:
            print("evo2lite: interrupted", file=sys.stderr, flush=True)
            rv = 130
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Byte-level DNA language models (StripedHyena 2 / Evo 2): score variants, embed "
                       "and generate DNA.")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"evo2lite {__version__}")
        raise typer.Exit()


@app.callback()
def _top(version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_show_version, is_eager=True, help="Print the version and exit.")] = False
         ) -> None:
    """Byte-level DNA language models (StripedHyena 2 / Evo 2): score variants, embed and generate DNA."""


@app.command()
@cli_errors
def info(model: Annotated[Optional[str], typer.Argument(
            help="A preset name (shape only, no weights needed) or a model spec as for --model "
                 "(small, the default; base; a directory, ...).")] = None,
         config: ConfigOpt = None) -> None:
    """Show a model's architecture, exact parameter count and where its weights come from."""
    from .loading import read_config

    cfg, source = read_config(model, config)  # never reads the weights
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
            to: Annotated[str, typer.Option("--to", help="evo2lite (default), vortex, or hf (a transformers "
                                                        "directory: docs/hf.md).")] = "evo2lite",
            force: ForceOpt = False) -> None:
    """Import an Evo 2 / vortex checkpoint into evo2lite's format, export one back (--to vortex), or write
    a Hugging Face transformers directory of any model (--to hf)."""
    from .checkpoint import convert as convert_checkpoint
    from .io import check_overwrite

    if to not in ("evo2lite", "vortex", "hf"):
        raise Evo2LiteError(f"--to must be evo2lite, vortex or hf, got {to!r}")
    check_overwrite(output, force)
    if to == "hf":
        from .hf.export import convert_to_hf

        convert_to_hf(source, output, config=config)
    else:
        convert_checkpoint(source, output, config=config, to=to)
    typer.echo(f"wrote {output}", err=True)


@app.command()
@cli_errors
def score(fasta: Annotated[str, typer.Argument(help="FASTA or GenBank (plain, gzip or BGZF), '-' for stdin.")],
          output: Annotated[Optional[Path], typer.Option("-o", "--output", help="TSV output (default: stdout).")] = None,
          per_position: Annotated[Optional[Path], typer.Option(
              "--per-position", help="Per-base log-probs: .bedGraph/.bg or .npz.")] = None,
          context: Annotated[Optional[int], typer.Option(
              "--context", help="Window W for long records (default: min(trained context, 8192)).")] = None,
          batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
          model: ModelOpt = None, config: ConfigOpt = None, device: DeviceOpt = "auto",
          dtype: DtypeOpt = None, threads: ThreadsOpt = None, fp8: Fp8Opt = "auto",
          allow_inexact: AllowInexactOpt = False, force: ForceOpt = False,
          context_parallel: Annotated[int, typer.Option(
              "--context-parallel", help="Split each window across the N ranks of a torchrun job (N = "
                                         "--nproc-per-node); rank 0 writes the outputs.")] = 1,
          tag: Annotated[Optional[str], typer.Option(
              "--tag", help="Evo 2 phylogenetic tag |d__...;...;s__...| run before every window as context, "
                            "never scored (`evo2lite tag` builds one).")] = None) -> None:
    """Per-sequence log-likelihood (natural log) of every record: name, length, sum and mean log-prob."""
    from .apps.input_check import DnaCheck
    from .apps.score import score_sequences, write_per_position, write_score_table
    from .loading import load_model
    from .io import atomic_path, check_output, input_path
    from .options import apply_threads, check_options, resolve_device
    from .pipelines.fasta import read_sequences
    from .progress import progress_bar

    check_options(batch_size=batch_size, context=context)
    if tag is not None:
        from .tags import check_tag

        check_tag(tag)  # before any work; the model warning follows once it is loaded
        if context_parallel > 1:
            raise Evo2LiteError("--tag is not implemented with --context-parallel")
    apply_threads(threads)
    device = resolve_device(device)
    for path in (output, per_position):
        if path is not None:
            check_output(path, force)
    check = DnaCheck()
    with input_path(fasta) as path:
        records = [(r.name, r.seq) for r in read_sequences(path)]
    for _, seq in records:
        check.add(seq)
        check.end_record()
    check.report()
    if context_parallel > 1:  # one sequence across the ranks of a torchrun job (docs/context-parallel.md)
        from contextlib import nullcontext

        from .parallel.dist import init_distributed, peer_failure_guard
        from .parallel.inference import context_parallel_model

        dist_info, dev = init_distributed(device, context_parallel=context_parallel, whole_job=True)
        with peer_failure_guard(dist_info.timeout_s):
            net = context_parallel_model(load_model(model, config=config, device=str(dev), dtype=dtype, fp8=fp8,
                                                    allow_inexact=allow_inexact),
                                         dist_info.cp_group)
            total = sum(max(len(seq) - 1, 0) for _, seq in records)
            bar = progress_bar("scoring", total=total, unit="bases") if dist_info.main else nullcontext(None)
            with bar as advance:
                results = score_sequences(net, records, batch_size=batch_size, context=context,
                                          progress=advance)
        if not dist_info.main:
            return
    else:
        net = load_model(model, config=config, device=device, dtype=dtype, fp8=fp8, allow_inexact=allow_inexact)
        if tag is not None:
            check_tag(tag, net)
        total = sum(max(len(seq) - 1, 0) for _, seq in records)
        with progress_bar("scoring", total=total, unit="bases") as advance:
            results = score_sequences(net, records, batch_size=batch_size, context=context, progress=advance,
                                      tag=tag or "")
    from .apps.provenance import run_provenance
    from .loading import scoring_window

    meta = run_provenance(net, context=context if context is not None else scoring_window(net, None),
                          context_parallel=context_parallel if context_parallel > 1 else None, tag=tag)
    if output is None:
        write_score_table(results, sys.stdout, meta)
    else:
        with atomic_path(output) as tmp, open(tmp, "w") as out:
            write_score_table(results, out, meta)
    if per_position is not None:
        write_per_position(results, per_position, meta)


@app.command("tag")
@cli_errors
def tag_command(lineage: Annotated[str, typer.Argument(
        help="Ranks from domain down, ';'-separated: 'Bacteria;Pseudomonadota;Gammaproteobacteria;...' "
             "(GTDB's d__/p__ prefixes accepted).")]) -> None:
    """Print the Evo 2 phylogenetic tag of a lineage (offline), for --tag: |d__...;p__...;...;s__...|."""
    from .tags import build_tag

    print(build_tag(lineage))


def _register_app_commands() -> None:
    # each app's command lives beside its API; their modules import only typer at load time
    from .apps.embed_cli import embed_command
    from .apps.generate_cli import generate_command
    from .apps.mutagenize_cli import mutagenize_command
    from .apps.score_vcf_cli import score_vcf_command
    from .apps.selftest import selftest_command
    from .apps.train_cli import train_command

    app.command("score-vcf")(score_vcf_command)
    app.command("generate")(generate_command)
    app.command("mutagenize")(mutagenize_command)
    app.command("embed")(embed_command)
    app.command("train")(train_command)
    app.command("selftest")(selftest_command)


_register_app_commands()

data_app = typer.Typer(no_args_is_help=True, help="Training corpora: build byte shards from a manifest.")
app.add_typer(data_app, name="data")

from .apps.eval_cli import eval_app  # noqa: E402  (imports only typer at load time)

app.add_typer(eval_app, name="eval")

from .apps.plot_cli import plot_app  # noqa: E402  (imports only typer at load time)

app.add_typer(plot_app, name="plot")


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
