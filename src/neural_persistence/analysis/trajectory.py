"""Neural persistence over training: tidy trajectories, per-series change points, and who changes first.

Change points are found with PELT (``ruptures``, cost ``l2``: a change in mean) on each series of normalized NP
over checkpoints. The penalty is BIC-like, ``pen = 4 * sigma^2 * log(n)``, with the noise level ``sigma``
estimated robustly from the series itself (median absolute first difference / (0.6745 * sqrt(2))), so one
penalty works for series of any scale. The factor 4 was chosen by simulation: on pure Gaussian noise of 10-60
checkpoints it reports a change in under 2% of series, and it finds a 3-sigma level shift in 97%.
``penalty_scale`` multiplies it (larger: fewer change points).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .store import DB_NAME

__all__ = ["change_points", "change_summary", "first_changes", "role_trajectories", "trajectory"]


def trajectory(path: str | Path, out: str | Path | None = None, **options: Any) -> Any:
    """The tidy DataFrame of NP over the checkpoints of a run.

    ``path`` is either an analysis output directory (holding ``results.sqlite``) or a run's checkpoint
    directory, which is then analysed first into ``out`` (default ``<path>/neural-persistence``; what is
    already there is reused). ``options`` go to :func:`~neural_persistence.analysis.table.load_table`
    (``normalization``, ``p``, ``essential``; ``per_head`` and ``include_embeddings`` pick the analysis) and, for
    a run, to ``analyze`` (``per_head``, ...).
    """
    from .analyze import analyze
    from .table import load_table

    path = Path(path)
    table_keys = {"normalization", "p", "essential"}
    table_options: dict[str, Any] = {k: v for k, v in options.items() if k in table_keys}
    # The analysis asked for, not another one kept in the same folder.
    selection: dict[str, Any] = {k: bool(options[k]) for k in ("per_head", "include_embeddings") if k in options}
    if (path / DB_NAME).exists():
        return load_table(path, **table_options, **selection)
    target = Path(out) if out is not None else path / "neural-persistence"
    analyze([path], target, **{k: v for k, v in options.items() if k not in table_keys})
    selection = {"per_head": bool(options.get("per_head")), "include_embeddings": bool(options.get("include_embeddings"))}
    return load_table(target, **table_options, **selection)


def role_trajectories(frame: Any) -> Any:
    """Mean normalized NP per (run, role, step), averaged over blocks, heads and experts (a mixture-of-experts
    block's experts each count as one matrix of their role)."""
    return (
        frame.groupby(["run", "role", "step"], dropna=False)["normalized_np"].mean().reset_index()
        .sort_values(["run", "role", "step"])
    )


def _penalty(signal: np.ndarray, scale: float) -> float:
    diffs = np.abs(np.diff(signal))
    sigma = np.median(diffs) / (0.6745 * math.sqrt(2)) if len(diffs) else 0.0
    sigma = max(sigma, 1e-6 * max(1e-12, float(np.abs(signal).max())))
    return float(scale * 4 * sigma**2 * math.log(len(signal)))


def change_points(steps: np.ndarray, values: np.ndarray, penalty_scale: float = 1.0, min_size: int = 2) -> list[int]:
    """Steps at which a new segment of ``values`` starts (PELT, l2 cost, penalty in the module docstring)."""
    rpt = require("ruptures", "plot")
    order = np.argsort(steps)
    steps, values = np.asarray(steps)[order], np.asarray(values, dtype=float)[order]
    if len(values) < 2 * min_size or np.ptp(values) == 0:
        return []
    ends = rpt.Pelt(model="l2", min_size=min_size, jump=1).fit(values.reshape(-1, 1)).predict(
        pen=_penalty(values, penalty_scale)
    )
    return [int(steps[e]) for e in ends[:-1]]


def change_summary(frame: Any, by: str = "matrix", penalty_scale: float = 1.0) -> Any:
    """Change points of every series and when each series first changes, earliest first.

    ``by="matrix"``: one series per (run, tensor, role, head, expert); ``by="role"``: the role means (over
    blocks, heads and experts).
    """
    pd = require("pandas", "plot")
    frame = frame.dropna(subset=["step"])
    if by == "role":
        series = role_trajectories(frame).groupby(["run", "role"])
        keys = ["run", "role"]
    else:
        keys = [k for k in ("run", "tensor", "block", "role", "head", "expert") if k in frame.columns]
        series = frame.groupby(keys)
    rows = []
    for key, group in series:
        points = change_points(group["step"].to_numpy(), group["normalized_np"].to_numpy(), penalty_scale)
        rows.append({**dict(zip(keys, key)), "change_points": points, "first_change": points[0] if points else None,
                     "n_change_points": len(points)})
    table = pd.DataFrame(rows, columns=keys + ["change_points", "first_change", "n_change_points"])
    return table.sort_values("first_change", na_position="last").reset_index(drop=True)


def first_changes(frame: Any, summary: Any, min_size: int = 2) -> Any:
    """Who changes first, with ties said: one row per distinct first change step, earliest first.

    ``summary`` is :func:`change_summary` ``(frame, by="matrix")``. Series whose first change point falls at the
    same step changed *together* as far as the checkpoints can tell, so they are one row: ``series`` lists them
    largest change first (``size``: the mean of the series over the checkpoints after the step minus the mean
    before it, up to its next change point), and ``separable`` is False when the step is the earliest one a
    change point can have (``min_size`` checkpoints after the start, as in :func:`change_points`): a change that
    happened anywhere before it is reported there, so the spacing cannot order those series.
    """
    pd = require("pandas", "plot")
    keys = [k for k in ("run", "tensor", "block", "role", "head", "expert") if k in summary.columns]
    changed = summary.dropna(subset=["first_change"])
    steps = sorted(frame["step"].dropna().unique())
    rows = []
    for step, group in changed.groupby("first_change", sort=True):
        sizes = []
        for record in group.itertuples(index=False):
            mask = np.ones(len(frame), bool)
            for k in keys:
                mask &= (frame[k] == getattr(record, k)).to_numpy()
            series = frame[mask].dropna(subset=["step"]).sort_values("step")
            later = [p for p in record.change_points if p > step]
            before = series[series["step"] < step]["normalized_np"]
            after = series[(series["step"] >= step) & (series["step"] < (later[0] if later else np.inf))]["normalized_np"]
            size = float(after.mean() - before.mean()) if len(before) and len(after) else float("nan")
            name = f"block {int(record.block)} {record.role}" + (
                f" expert {int(record.expert)}" if getattr(record, "expert", -1) >= 0 else "") + (
                f" head {int(record.head)}" if record.head >= 0 else "")
            sizes.append((abs(size) if size == size else -1.0, name, size))
        sizes.sort(reverse=True)
        rows.append({"step": int(step), "n_series": len(sizes), "series": [n for _, n, _ in sizes],
                     "sizes": [round(v, 6) for _, _, v in sizes],
                     "separable": len(steps) <= min_size or step != steps[min_size]})
    return pd.DataFrame(rows, columns=["step", "n_series", "series", "sizes", "separable"])
