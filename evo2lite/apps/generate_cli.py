"""`evo2lite generate`: the typer command (registered by evo2lite/cli.py as
`app.command("generate")(generate_command)`). Parses options, calls `evo2lite.apps.generate.generate`,
writes FASTA. Heavy modules are imported inside the command so `evo2lite --help` stays instant."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..errors import Evo2LiteError, cli_errors
from ..options import AllowInexactOpt, ConfigOpt, DeviceOpt, DtypeOpt, ForceOpt, Fp8Opt, ModelOpt, ThreadsOpt


@cli_errors
def generate_command(
    num_tokens: Annotated[int, typer.Option("-n", "--num-tokens", help="New bases to generate per sample.")],
    prompt: Annotated[Optional[str], typer.Option(
        "--prompt", "-p", help="The prompt: bases and/or tags such as '|d__Bacteria;p__Pseudomonadota|'.")] = None,
    prompts: Annotated[Optional[str], typer.Option(
        "--prompts", help="FASTA of prompts (plain or compressed), '-' for stdin; each record is one "
                          "prompt.")] = None,
    output: Annotated[str, typer.Option("-o", "--output", help="Output FASTA, or - for stdout (streamed as "
                                        "tokens are produced).")] = "-",
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Softmax temperature; 0 = greedy.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k most likely tokens (<= 0: all).")] = 4,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass in (0, 1].")] = 1.0,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Random seed: the same seed gives the same output (default: drawn, written in the "
                       "headers).")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", "-s", help="Samples per prompt.")] = 1,
    acgt_only: Annotated[bool, typer.Option(
        "--acgt-only", help="Sample only A, C, G, T (the prompt may hold any bytes).")] = False,
    include_prompt: Annotated[bool, typer.Option(
        "--include-prompt", help="Write the prompt before the generated bases.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Samples decoded together.")] = 8,
    model: ModelOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = None,
    threads: ThreadsOpt = None,
    fp8: Fp8Opt = "auto",
    allow_inexact: AllowInexactOpt = False,
    force: ForceOpt = False,
    compile_step: Annotated[bool, typer.Option(
        "--compile", help="Fuse the decode step with torch.compile first: about a minute to start, then faster "
                          "per token on CUDA (benchmarks/RESULTS.md); for long generations.")] = False,
    tag: Annotated[Optional[str], typer.Option(
        "--tag", help="Evo 2 phylogenetic tag |d__...;...;s__...| put before every prompt, as the official "
                      "models were trained; not written out (`evo2lite tag` builds one).")] = None,
) -> None:
    """Generate DNA from a prompt with cached sampling (temperature / top-k / top-p / seed); FASTA out,
    sampling settings in each header line."""
    if (prompt is None) == (prompts is None):
        raise Evo2LiteError("give exactly one of --prompt SEQ or --prompts FASTA")
    from ..inference import GenerationError, SamplingParams
    from ..options import apply_threads, check_options, resolve_device

    check_options(GenerationError, num_tokens=num_tokens, num_samples=num_samples, batch_size=batch_size,
                  seed=seed)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, acgt_only=acgt_only)
    apply_threads(threads)
    device = resolve_device(device)
    if prompt is not None and not prompt:
        raise Evo2LiteError("--prompt is empty; give at least one base or tag")
    if tag is not None:
        from ..tags import check_tag

        check_tag(tag)
    if output != "-":
        from ..io import check_overwrite

        check_overwrite(output, force)

    from ..loading import load_model
    from ..progress import progress_bar
    from .provenance import run_provenance
    from .generate import FastaSink, fasta_header, generate, read_prompts

    if prompt is not None:
        records = [("prompt", prompt)]
    else:
        from ..io import input_path

        with input_path(prompts) as path:
            records = read_prompts(path)
    net = load_model(model, config=config, device=device, dtype=dtype, fp8=fp8, allow_inexact=allow_inexact)
    model_name = net.config.name or str(model or "default")
    meta = run_provenance(net, tag=tag)

    def header(row) -> str:
        return fasta_header(row, num_tokens, params, model_name, meta)

    def run(out, stream: bool) -> None:
        sink = FastaSink(out, header, include_prompt=include_prompt, flush=stream)
        total = num_tokens * num_samples * len(records)
        # a live progress bar would garble bases streamed to the same terminal
        show = not (stream and sys.stdout.isatty())
        with progress_bar("generating", total=total if show else None, unit="tokens") as advance:
            generate(records, num_tokens, model=net, temperature=temperature, top_k=top_k, top_p=top_p,
                     seed=seed, num_samples=num_samples, acgt_only=acgt_only, batch_size=batch_size,
                     sink=sink, progress=advance if show else None, tag=tag or "", compile=compile_step)

    if output == "-":
        run(sys.stdout, stream=True)
        return
    from ..io import atomic_path

    with atomic_path(output) as tmp, open(tmp, "w") as out:
        run(out, stream=False)
    print(f"evo2lite: wrote {output}", file=sys.stderr)
