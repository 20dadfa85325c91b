"""The saturation-mutagenesis heatmap: one column per position, one row per ALT base (A, C, G, T), colour the
score (window delta or site); the reference base's cell is left empty and marked, unscored cells are empty.
A figure as evo2lite.plots builds them (no pyplot); ``save_figure`` writes it.

Legend: P positions, A alt bases (4).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["heatmap_matrix", "mutagenesis_heatmap"]

_BASES = "ACGT"


def heatmap_matrix(rows, value: str = "score") -> tuple[np.ndarray, list[int], list[str]]:
    """(A, P) matrix of ``value`` over the SNV rows (NaN where none or unscored), the 1-based positions and
    the reference base of each position. Deletion rows (two-base REF) are left out."""
    snvs = [r for r in rows if len(r.ref) == 1]
    positions = sorted({r.pos for r in snvs})
    column = {p: i for i, p in enumerate(positions)}
    m_AP = np.full((len(_BASES), len(positions)), np.nan)
    refs = ["N"] * len(positions)
    for r in snvs:
        refs[column[r.pos]] = r.ref
        x = getattr(r, value)
        if r.alt in _BASES and not math.isnan(x):
            m_AP[_BASES.index(r.alt), column[r.pos]] = x
    return m_AP, positions, refs


def mutagenesis_heatmap(rows, *, value: str = "score", title: str | None = None):
    """A Figure: the heatmap of ``value`` ("score" or "site") with a diverging colour scale centred on 0."""
    from ..plots import _figure

    m_AP, positions, refs = heatmap_matrix(rows, value)
    width = min(16.0, 3.0 + 0.12 * len(positions))
    fig, axes = _figure(size=(width, 2.6))
    ax = axes[0, 0]
    finite = np.abs(m_AP[np.isfinite(m_AP)])
    limit = float(finite.max()) if finite.size else 1.0
    image = ax.imshow(m_AP, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    for p, base in enumerate(refs):
        if base in _BASES:
            ax.plot(p, _BASES.index(base), marker=".", color="black", markersize=3)
    ax.set_yticks(range(len(_BASES)), list(_BASES))
    ticks = np.unique(np.linspace(0, len(positions) - 1, min(len(positions), max(2, int(width / 1.4)))).round().astype(int))
    ax.set_xticks(ticks, [f"{positions[i]:,}" for i in ticks])
    ax.set_xlabel(f"{rows[0].chrom} position (1-based); dot: reference base" if rows else "position")
    ax.set_ylabel("ALT")
    fig.colorbar(image, ax=ax, label="ALT - REF log-likelihood" if value == "score" else "log P(ALT)/P(REF)")
    if title:
        ax.set_title(title)
    return fig
