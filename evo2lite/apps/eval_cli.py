"""`evo2lite eval synthetic`: the MAD token-manipulation tasks for any block layout (evo2lite/evals)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import Evo2LiteError, cli_errors
from ..options import DeviceOpt, ForceOpt, resolve_device

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
        num_test: Annotated[int, typer.Option(
            "--num-test", help="Test examples per setting (MAD: 1280; recorded per row).")] = 1280,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the data and the initialisation.")] = 12345,
        jobs: Annotated[int, typer.Option("--jobs", help="Runs in parallel (worker processes).")] = 1,
        time_budget: Annotated[Optional[float], typer.Option(
            "--time-budget", help="Seconds after which no new run starts (finish later with --resume).")] = None,
        device: DeviceOpt = "auto",
        backend: Annotated[str, typer.Option(
            "--backend", help="Hyena kernels: auto (Triton on CUDA), triton or reference (plain PyTorch).")]
        = "auto",
        plots: Annotated[Optional[Path], typer.Option(
            "--plots", help="Folder for one accuracy-vs-difficulty plot per task (PNG).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Keep the rows already in OUTPUT; run the rest.")]
        = False,
        force: ForceOpt = False) -> None:
    """Train and test every layout on the MAD tasks; print the layouts x tasks accuracy table."""
    from ..evals import TASKS, run_synthetic
    from ..evals.report import markdown_summary, plot_task
    from ..io import check_output

    if not resume:
        check_output(output, force)
    task_names = list(TASKS) if _split(tasks) == ["all"] else _split(tasks)
    layout_list = _split(layouts)
    for name, value, low in (("--epochs", epochs, 1), ("--batch-size", batch_size, 1), ("--jobs", jobs, 1),
                             ("--num-test", num_test, 1),
                             ("--max-steps", max_steps if max_steps is not None else 1, 1)):
        if value < low:
            raise Evo2LiteError(f"{name} must be at least {low}, got {value}")
    if any(v <= 0 for v in lr) or any(v < 0 for v in weight_decay):
        raise Evo2LiteError("--lr must be positive and --weight-decay non-negative")
    device = resolve_device(device)  # auto -> cuda or cpu; a bad or absent device is a one-line error
    with _run_progress(per_step=jobs == 1) as callbacks:
        df = run_synthetic(layout_list, task_names, output, grid=grid, lrs=lr, weight_decays=weight_decay,
                           epochs=epochs, max_steps=max_steps, batch_size=batch_size, seed=seed, device=device,
                           jobs=jobs, resume=resume, time_budget=time_budget, num_test=num_test, backend=backend,
                           **callbacks)
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        for task in sorted(df["task"].unique()):
            plot_task(df, task, plots / f"{task}.png")
    typer.echo(markdown_summary(df), nl=False)
    typer.echo(f"wrote {output} ({len(df)} runs)", err=True)


@contextlib.contextmanager
def _run_progress(per_step: bool):
    """run_synthetic's callbacks: a line on stderr per finished run (always: sweeps run for hours under
    nohup), and on a terminal a bar over the runs and (runs in this process: `per_step`) a bar over the
    current run's steps."""
    from ..progress import progress_shown

    finished = [0]

    def describe(row: dict, todo: int) -> str:
        finished[0] += 1
        return (f"[{finished[0]}/{todo}] {row['layout']} {row['setting']} lr={row['lr']:g} "
                f"wd={row['weight_decay']:g}: test_acc {row['test_acc']:.3f}, test_loss {row['test_loss']:.3f}, "
                f"{row['steps']} steps, {row['seconds']:.1f} s")

    if not progress_shown():
        yield dict(progress=lambda row, todo: typer.echo(describe(row, todo), err=True))
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True)) as bar:
        runs = bar.add_task("runs", total=None)
        steps = bar.add_task("steps", total=None, visible=per_step)

        def on_start(spec, todo: int) -> None:
            bar.update(runs, total=todo)
            bar.reset(steps, total=None, description=f"{spec.layout} {spec.task}")

        def on_step(step: int, total: int) -> None:
            bar.update(steps, completed=step, total=total)

        def progress(row: dict, todo: int) -> None:
            bar.update(runs, total=todo, advance=1)
            bar.console.print(describe(row, todo))

        yield dict(on_start=on_start, on_step=on_step, progress=progress)
