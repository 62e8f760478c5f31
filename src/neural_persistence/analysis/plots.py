"""Plots of neural persistence results (needs ``neural-persistence[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._optional import require
from ..core.results import PersistenceDiagram

__all__ = ["plot_diagram"]


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "plot")
    matplotlib.use("Agg", force=False)
    return require("matplotlib.pyplot", "plot")


def plot_diagram(diagram: PersistenceDiagram, title: str = "", path: str | Path | None = None, ax: Any = None) -> Any:
    """Scatter a layer's 0-dimensional diagram: deaths against births, with the diagonal and the essential point.

    Every point is born at 1, so the plot shows the spread of death values (the normalized spanning-tree
    weights); a point far below the diagonal is a component that lived long. Saves to ``path`` when given.
    """
    plt = _pyplot()
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
    finite = diagram.deaths > 0
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="diagonal")
    ax.scatter(diagram.deaths[finite], diagram.births[finite], s=12, alpha=0.6, label=f"{finite.sum()} merges")
    if (~finite).any():
        ax.scatter(diagram.deaths[~finite], diagram.births[~finite], marker="x", color="C3",
                   label=f"death 0 ({(~finite).sum()}, essential included)")
    ax.set_xlabel("death (normalized |w| of the merging edge)")
    ax.set_ylabel("birth")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.08)
    ax.set_aspect("equal")
    hist = ax.inset_axes([0.12, 0.35, 0.8, 0.3])  # where the points pile up on the line birth = 1
    hist.hist(diagram.deaths, bins=40, range=(0, 1), color="C0", alpha=0.7)
    hist.set_title("deaths", fontsize=8)
    hist.tick_params(labelsize=7)
    ax.set_title(title or "persistence diagram")
    ax.legend(loc="lower right", fontsize=8)
    if own and path is not None:
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return ax
