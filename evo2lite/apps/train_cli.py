"""`evo2lite train CONFIG`: the typer command (registered in evo2lite/cli.py as
`app.command("train")(train_command)`). Heavy imports stay inside the body so `evo2lite --help` is instant.

Several processes (GPUs): `torchrun --nproc-per-node N -m evo2lite train CONFIG [--context-parallel C]`;
each rank reads RANK/WORLD_SIZE from the environment; C ranks share each window (context parallelism),
N / C replicas are data-parallel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import cli_errors
from ..options import DeviceOpt, ThreadsOpt


@cli_errors
def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML): corpus, model, batch, schedule; "
                                                "see data/train/*.yaml.")],
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", "-o", help="Run folder (log, checkpoints, "
                                                    "exported model). Overrides the config's out_dir.")] = None,
    corpus: Annotated[Optional[Path], typer.Option("--corpus", help="A built corpus folder or its 2-bit "
                                                   "pack. Overrides the config's corpus.")] = None,
    init_from: Annotated[Optional[str], typer.Option("--init-from", help="Fine-tune this checkpoint: an "
                                                     "evo2lite directory, an Evo 2 .pt (with --init-config) "
                                                     "or hf:REPO.")] = None,
    init_config: Annotated[Optional[str], typer.Option("--init-config", help="YAML or preset name for an "
                                                       "Evo 2 .pt given to --init-from.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="A checkpoint folder, or 'auto' for the "
                                                  "latest one in the run folder.")] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Override max_steps.")] = None,
    time_budget: Annotated[Optional[float], typer.Option("--time-budget", help="Seconds of wall time to "
                                                         "fit the schedule into.")] = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    context_parallel: Annotated[int, typer.Option("--context-parallel", help="Split every window across N "
                                                  "ranks (torchrun; N divides the process count, the other "
                                                  "axis is data-parallel).")] = 1,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config key: KEY=VALUE "
                                                      "(VALUE read as YAML); repeatable.")] = None,
) -> None:
    """Pretrain or fine-tune a StripedHyena 2 model on a corpus (AdamW, warm-up + cosine, bf16 on GPU,
    DDP under torchrun); resumable checkpoints and a JSONL log in the run folder."""
    import yaml

    from ..errors import ConfigError
    from ..options import apply_threads, check_options, resolve_device
    from .train import load_train_config, train

    check_options(max_steps=max_steps, time_budget=time_budget)
    apply_threads(threads)
    device = resolve_device(device)

    extra = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        extra[key.strip()] = yaml.safe_load(value)
    options = dict(out_dir=str(out_dir) if out_dir else None, corpus=str(corpus) if corpus else None,
                   init_from=init_from, init_config=init_config, max_steps=max_steps, time_budget_s=time_budget)
    # a dedicated option wins over --set of the same key (given both, not a duplicate-keyword traceback)
    extra.update({k: v for k, v in options.items() if v is not None})
    cfg = load_train_config(config, **extra)
    from ..parallel.dist import peer_failure_guard

    with peer_failure_guard():  # a dead or hung rank: one line, not a traceback
        summary = train(cfg, resume=resume, device=device, context_parallel=context_parallel)
    typer.echo(f"steps {summary['steps']}  tokens {summary['tokens']:,}  wall {summary['wall_s']:,.0f} s  "
               f"-> {summary.get('export', summary['checkpoint'])}", err=True)


if __name__ == "__main__":
    typer.run(train_command)
