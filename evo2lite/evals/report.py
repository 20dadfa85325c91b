"""Tables and plots of a synthetic-task sweep: accuracy vs difficulty, one line per layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .runner import best_over_sweep, summary_table
from .tasks import TASKS


def difficulty_curves(df, task: str) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{change axis: {layout: [(axis value, best test accuracy), ...]}} with the baseline as each axis's
    first point, values in increasing order."""
    best = best_over_sweep(df[df["task"] == task])
    if best.empty:
        return {}
    base = TASKS[task].baseline
    baseline_rows = best[best["change_key"] == ""]
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for axis in sorted(k for k in best["change_key"].unique() if k):
        per_layout: dict[str, list[tuple[float, float]]] = {}
        for layout in sorted(best["layout"].unique()):
            points = [(float(base[axis]), float(r.test_acc))
                      for r in baseline_rows[baseline_rows["layout"] == layout].itertuples()]
            rows = best[(best["change_key"] == axis) & (best["layout"] == layout)]
            points += [(float(json.loads(r.change_value)), float(r.test_acc)) for r in rows.itertuples()]
            per_layout[layout] = sorted(points)
        curves[axis] = per_layout
    return curves


def plot_task(df, task: str, path: str | os.PathLike):
    """One figure per task, one panel per difficulty axis; returns the Figure (saved by extension)."""
    try:
        import matplotlib
    except ImportError as exc:  # the extra is not installed
        from ..errors import Evo2LiteError

        raise Evo2LiteError("plots need matplotlib: pip install 'evo2lite[plots]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = difficulty_curves(df, task)
    panels = max(len(curves), 1)
    fig, axes = plt.subplots(1, panels, figsize=(3.6 * panels, 3.2), squeeze=False)
    if not curves:  # the baseline setting alone: one bar per layout
        best = best_over_sweep(df[df["task"] == task])
        axes[0][0].bar(best["layout"], best["test_acc"])
        axes[0][0].tick_params(axis="x", labelrotation=60, labelsize=7)
        axes[0][0].set_ylim(0, 1.02)
    for ax, (axis, per_layout) in zip(axes[0], curves.items()):
        for layout, points in per_layout.items():
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", label=layout)
        ax.set_xlabel(axis)
        ax.set_ylim(0, 1.02)
        if axis in ("vocab_size", "seq_len", "num_train_examples"):
            ax.set_xscale("log", base=2)
    axes[0][0].set_ylabel("test accuracy (best over sweep)")
    if curves:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(task)
    fig.tight_layout()
    _save(fig, path)
    return fig


def _save(fig, path) -> None:
    from ..io import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)


def markdown_summary(df) -> str:
    """Layouts x tasks table of mean best accuracy (MAD's per-task score), as Markdown; '-' where a layout
    has no finished run of a task."""
    table = summary_table(df)
    if table.empty:
        return "(no runs)\n"
    shorts = {name: TASKS[name].short for name in table.columns if name in TASKS}
    cols = list(table.columns)
    lines = ["| layout | " + " | ".join(shorts.get(c, c) for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for layout, row in table.iterrows():
        lines.append(f"| {layout} | " + " | ".join("-" if row[c] != row[c] else f"{row[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"
