"""What NP says beyond the weight distribution: NP beside its null model and beside simple statistics, per role.

For each (run, role), over the checkpoints of the run (role means over blocks, heads and experts):

* ``structural_np``: the mean z-score (NP - null mean) / null std at the last checkpoint. Near 0: the arrangement
  of the weights adds nothing a shuffle would not give; far from 0: it does.
* ``r_null``: the correlation over checkpoints of normalized NP with the null's normalized NP: near 1, NP's
  trajectory is that of the weights' distribution alone;
* ``best_baseline`` and ``r_best``: the statistic (rms, outlier ratio, excess kurtosis, spread, Frobenius norm)
  whose trajectory correlates most (in absolute value) with NP's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._optional import require
from .table import STATISTICS_COLUMNS

__all__ = ["structure_summary"]


def _correlation(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3 or np.std(a[keep]) == 0 or np.std(b[keep]) == 0:
        return float("nan")
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def structure_summary(frame: Any) -> Any:
    """One row per (run, role): see the module docstring. Needs ``analyze --null K`` and/or ``--baselines``
    columns; those missing give blanks."""
    pd = require("pandas", "plot")
    has_null = "null_normalized_np" in frame.columns
    stats = [c for c in STATISTICS_COLUMNS if c in frame.columns]
    rows = []
    stepped = frame.dropna(subset=["step"])
    for (run, role), part in (stepped if len(stepped) else frame).groupby(["run", "role"]):
        means = part.groupby("step" if len(stepped) else "checkpoint")[
            ["normalized_np"] + (["null_normalized_np", "structural_np"] if has_null else []) + stats].mean()
        row: dict[str, Any] = {"run": run, "role": role, "checkpoints": len(means)}
        if has_null:
            row["structural_np"] = float(means["structural_np"].iloc[-1])
            row["np_minus_null"] = float(means["normalized_np"].iloc[-1] - means["null_normalized_np"].iloc[-1])
            row["r_null"] = _correlation(means["normalized_np"], means["null_normalized_np"])
        if stats:
            r = {c: _correlation(means["normalized_np"], means[c]) for c in stats}
            finite = {c: v for c, v in r.items() if v == v}
            best = max(finite, key=lambda c: abs(finite[c])) if finite else None
            row["best_baseline"] = best
            row["r_best"] = finite[best] if best else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)
