"""`evo2lite eval synthetic`: the MAD token-manipulation tasks for any block layout (evo2lite/evals)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import Evo2LiteError, cli_errors

eval_app = typer.Typer(no_args_is_help=True, help="Evaluations: the paper's synthetic token-manipulation tasks.")

DEFAULT_LAYOUTS = "SSSS,MMMM,LLLL,AAAA,SMLA,SSMA,SMLASMLA"


def _split(values: list[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


@eval_app.command("synthetic")
@cli_errors
def synthetic_command(
        output: Annotated[Path, typer.Option("-o", "--output", help="Results table (.parquet), one run a row.")],
        layouts: Annotated[list[str], typer.Option(
            "--layouts", help="Layout strings (S, M, L, A), comma-separated or repeated.")] = [DEFAULT_LAYOUTS],
        tasks: Annotated[list[str], typer.Option(
            "--tasks", help="Task names, comma-separated or repeated, or 'all'.")] = ["all"],
        grid: Annotated[str, typer.Option(
            "--grid", help="baseline | reduced (baseline + the first change on each axis) | full (MAD's sweep).")]
        = "reduced",
        lr: Annotated[list[float], typer.Option("--lr", help="Learning rates of the sweep (repeat).")] = [5e-4],
        weight_decay: Annotated[list[float], typer.Option(
            "--weight-decay", help="Weight decays of the sweep (repeat).")] = [0.0],
        epochs: Annotated[int, typer.Option("--epochs", help="Epochs per run (MAD: 200).")] = 200,
        max_steps: Annotated[Optional[int], typer.Option(
            "--max-steps", help="Cap on optimizer steps per run (a reduced protocol; recorded per row).")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the data and the initialisation.")] = 12345,
        jobs: Annotated[int, typer.Option("--jobs", help="Runs in parallel (worker processes).")] = 1,
        time_budget: Annotated[Optional[float], typer.Option(
            "--time-budget", help="Seconds after which no new run starts (finish later with --resume).")] = None,
        device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
        plots: Annotated[Optional[Path], typer.Option(
            "--plots", help="Folder for one accuracy-vs-difficulty plot per task (PNG).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Keep the rows already in OUTPUT; run the rest.")]
        = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite an existing OUTPUT.")] = False) -> None:
    """Train and test every layout on the MAD tasks; print the layouts x tasks accuracy table."""
    from ..evals import TASKS, run_synthetic
    from ..evals.report import markdown_summary, plot_task
    from ..io import check_output
    from ..progress import progress_bar

    if not resume:
        check_output(output, force)
    task_names = list(TASKS) if _split(tasks) == ["all"] else _split(tasks)
    layout_list = _split(layouts)
    for name, value, low in (("--epochs", epochs, 1), ("--batch-size", batch_size, 1), ("--jobs", jobs, 1),
                             ("--max-steps", max_steps if max_steps is not None else 1, 1)):
        if value < low:
            raise Evo2LiteError(f"{name} must be at least {low}, got {value}")
    if any(v <= 0 for v in lr) or any(v < 0 for v in weight_decay):
        raise Evo2LiteError("--lr must be positive and --weight-decay non-negative")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from ..evals.runner import plan_runs

    total = len(plan_runs(layout_list, task_names, grid, lr, weight_decay, epochs, max_steps, batch_size, seed,
                          device))
    with progress_bar("training", total=total, unit="runs") as advance:
        df = run_synthetic(layout_list, task_names, output, grid=grid, lrs=lr, weight_decays=weight_decay,
                           epochs=epochs, max_steps=max_steps, batch_size=batch_size, seed=seed, device=device,
                           jobs=jobs, resume=resume, progress=advance, time_budget=time_budget)
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        for task in sorted(df["task"].unique()):
            plot_task(df, task, plots / f"{task}.png")
    typer.echo(markdown_summary(df), nl=False)
    typer.echo(f"wrote {output} ({len(df)} runs)", err=True)
