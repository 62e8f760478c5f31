"""What the dynamics studies share: NP measured by the CLI as a user runs it, change points of every per-head
series (NP, its null, the structural part NP - null, the head's rms), and how each relates to a transition that
was measured independently.

Two questions are asked of every series kind, so that NP is judged beside its baselines on equal terms:

* **Timing.** Does the series have a change point near the transition, and with what lag (change step minus
  transition step; negative: it leads)? :func:`nearest_changes`.
* **Discrimination.** Across the transition, does the series move differently for the heads that take part in it
  than for the others? Each head's move is its value just after the transition window minus just before, in units
  of its own checkpoint-to-checkpoint noise; the AUROC of that (signed) move, part-taking heads against the rest, is
  0.5 for a series that cannot tell them apart, 1 where the part-taking heads always rise more, 0 where they always
  fall more. :func:`transition_moves`,
  :func:`auroc`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from neural_persistence.analysis.changepoints import detect_changes

#: The per-head series compared, as columns of the results table (structural: NP minus its null's mean).
SERIES = {"np": "normalized_np", "null": "null_normalized_np", "structural": "structural", "rms": "rms"}
KEY = ["run", "block", "role", "head"]


@dataclass(frozen=True)
class Measured:
    table: pd.DataFrame  # the per-head rows of results.csv, with a ``structural`` column
    seconds: float
    checkpoints: int


def measure_np(runs: Sequence[Path], out: Path) -> Measured:
    """``neural-persistence analyze RUNS --per-head --null 8 --baselines`` and its table, timed (NaN seconds
    where ``out`` already held an analysis that this call resumed)."""
    from neural_persistence.analysis.table import load_table
    from neural_persistence.cli import main as cli

    fresh = not out.exists()  # a resumed analysis measures little or nothing: its time is no cost figure
    start = time.perf_counter()
    code = cli(["analyze", *map(str, runs), "--out", str(out), "--per-head", "--null", "8", "--baselines"])
    if code != 0:
        raise RuntimeError(f"neural-persistence analyze exited with {code}")
    seconds = time.perf_counter() - start if fresh else float("nan")
    table = load_table(out, per_head=True)
    table = table.assign(structural=table["normalized_np"] - table["null_normalized_np"])
    return Measured(table=table, seconds=seconds, checkpoints=int(table.groupby("run")["step"].nunique().sum()))


def change_steps(steps: np.ndarray, values: np.ndarray) -> list[int]:
    """Steps of the change points of one series (the library's detector, default settings)."""
    return [c.step for c in detect_changes(steps, values)]


def head_changes(heads: pd.DataFrame) -> pd.DataFrame:
    """Per (run, block, role, head): the change-point steps of each series kind (columns ``<kind>_changes``)."""
    rows = []
    for key, group in heads.groupby(KEY):
        group = group.sort_values("step")
        steps = group["step"].to_numpy()
        row = dict(zip(KEY, key))
        for kind, column in SERIES.items():
            row[f"{kind}_changes"] = change_steps(steps, group[column].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def nearest(changes: Sequence[int], step: float, window: float) -> float:
    """Lag (change step minus ``step``) of the change point nearest to ``step`` within ``window``, else NaN."""
    lags = [c - step for c in changes if abs(c - step) <= window]
    return float(min(lags, key=abs)) if lags else float("nan")


def transition_moves(heads: pd.DataFrame, transitions: dict[str, float], window: float) -> pd.DataFrame:
    """Each head's move of every series kind across its run's transition, in noise units.

    Before: the last checkpoint at or before ``transition - window``; after: the first at or after ``transition +
    window``; noise: the median absolute checkpoint-to-checkpoint difference of the series (robust to the
    transition itself), scaled to a standard deviation and per checkpoint gap crossed.
    """
    rows = []
    for key, group in heads.groupby(KEY):
        run = key[0]
        if run not in transitions or not np.isfinite(transitions[run]):
            continue
        group = group.sort_values("step")
        steps = group["step"].to_numpy(dtype=float)
        before = np.flatnonzero(steps <= transitions[run] - window)
        after = np.flatnonzero(steps >= transitions[run] + window)
        if not len(before) or not len(after):
            continue
        i, j = before[-1], after[0]
        row = dict(zip(KEY, key))
        for kind, column in SERIES.items():
            values = group[column].to_numpy(dtype=float)
            noise = 1.4826 * float(np.median(np.abs(np.diff(values)))) * np.sqrt(j - i)
            row[f"{kind}_move"] = (values[j] - values[i]) / noise if noise > 0 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows, columns=KEY + [f"{kind}_move" for kind in SERIES])


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (Mann-Whitney, ties counted half); NaN if one class."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    pos, neg = scores[labels], scores[~labels]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A frame as a GitHub table (no extra dependency)."""
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def resumable(path: Path, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """The frame stored at ``path``, or ``compute()`` stored there: a study interrupted after a run was trained or
    measured keeps that run (delete the file to redo it)."""
    if path.exists():
        return pd.read_csv(path)
    frame = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path.with_suffix(".tmp"), index=False)
    path.with_suffix(".tmp").replace(path)
    return frame


def timed(compute: Callable[[], pd.DataFrame], column: str) -> Callable[[], pd.DataFrame]:
    """``compute`` with its wall time added as ``column`` (the same on every row)."""
    def run() -> pd.DataFrame:
        start = time.perf_counter()
        frame = compute()
        return frame.assign(**{column: time.perf_counter() - start})
    return run
