"""Progress bars on stderr (rich), quiet when stderr is not a terminal unless EVO2LITE_PROGRESS=1."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


def progress_shown() -> bool:
    """Whether progress_bar draws a bar (stderr is a terminal, or EVO2LITE_PROGRESS=1)."""
    return sys.stderr.isatty() or os.environ.get("EVO2LITE_PROGRESS") == "1"


@contextlib.contextmanager
def progress_bar(description: str, total: float | None, unit: str = "items") -> Iterator[Callable[[float], None]]:
    """Yield `advance(n)`. Shows done/total, rate per second and ETA."""
    if not progress_shown():
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, rate="")

        def advance(n: float = 1) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:,.0f} {unit}/s" if speed else "")

        yield advance
