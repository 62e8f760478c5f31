"""Neural persistence over training: tidy trajectories, per-series change points, and who changes first.

Change points come from :mod:`neural_persistence.analysis.changepoints` (level shifts and slope changes on a
smooth trend, calibrated by simulation; the table is there and in the README); any
:class:`~neural_persistence.analysis.changepoints.Detector` can be passed instead.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any


from .._optional import require
from .changepoints import ChangePoint, Detector, detect_changes
from .store import DB_NAME

__all__ = ["change_points", "change_summary", "changes_shown", "first_changes", "role_trajectories", "trajectory"]


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
    block's experts each count as one matrix of their role); with the null model's mean beside it where it was
    measured (``null_normalized_np``)."""
    columns = ["normalized_np"] + (["null_normalized_np"] if _has_null(frame) else [])
    return (
        frame.groupby(["run", "role", "step"], dropna=False)[columns].mean().reset_index()
        .sort_values(["run", "role", "step"])
    )


def _has_null(frame: Any) -> bool:
    return "null_normalized_np" in frame.columns and bool(frame["null_normalized_np"].notna().any())


def change_points(steps: Any, values: Any, detector: Detector | None = None) -> list[ChangePoint]:
    """The change points of one series (see :func:`~neural_persistence.analysis.changepoints.detect_changes`)."""
    return detect_changes(steps, values, detector)


_SUMMARY_COLUMNS = ["changes", "change_points", "first_change", "first_kind", "first_size", "first_z",
                    "first_confidence", "first_null_moved", "n_change_points"]


def change_summary(frame: Any, by: str = "matrix", detector: Detector | None = None) -> Any:
    """Change points of every series and when each series first changes, earliest first.

    ``by="matrix"``: one series per (run, tensor, role, head, expert); ``by="role"``: the role means (over
    blocks, heads and experts). Columns: ``changes`` (the :class:`ChangePoint` records), ``change_points``
    (their steps), the first change's ``first_change`` (step), ``first_kind``, ``first_size``, ``first_z`` and
    ``first_confidence``, and ``n_change_points``; a series without a change has an empty list and blanks.
    Where the null model was measured, each change records whether the null (the same weights shuffled) changed
    too, within one checkpoint of it (``null_moved``; ``first_null_moved``): the same detector on the null's
    series. A change the null shares may be one of the weights' distribution; one it does not share is one of
    their arrangement.
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
    with_null = _has_null(frame)
    for key, group in series:
        steps = group["step"].to_numpy()
        found = change_points(steps, group["normalized_np"].to_numpy(), detector)
        if with_null and found and group["null_normalized_np"].notna().all():
            near = {c.index for c in change_points(steps, group["null_normalized_np"].to_numpy(), detector)}
            found = [replace(c, null_moved=bool(near & {c.index - 1, c.index, c.index + 1})) for c in found]
        first = found[0] if found else None
        rows.append({**dict(zip(keys, key)), "changes": found, "change_points": [c.step for c in found],
                     "first_change": first.step if first else None, "first_kind": first.kind if first else None,
                     "first_size": first.size if first else None, "first_z": first.z if first else None,
                     "first_confidence": first.confidence if first else None,
                     "first_null_moved": first.null_moved if first else None, "n_change_points": len(found)})
    table = pd.DataFrame(rows, columns=keys + _SUMMARY_COLUMNS)
    return table.sort_values("first_change", na_position="last").reset_index(drop=True)


def changes_shown(summary: Any) -> Any:
    """:func:`change_summary` as people read it: the series' keys and one ``changes`` text column, each change
    as 'level +0.012 (4.1 sigma, confidence 0.998) at step 3000', or 'no change'."""
    keys = [k for k in ("run", "tensor", "block", "role", "head", "expert") if k in summary.columns]
    shown = summary[keys].copy()
    shown["changes"] = ["; ".join(c.describe() for c in found) if found else "no change"
                        for found in summary["changes"]]
    return shown


def first_changes(frame: Any, summary: Any, min_size: int = 3) -> Any:
    """Who changes first, with ties said: one row per distinct first change step, earliest first.

    ``summary`` is :func:`change_summary` ``(frame, by="matrix")``. Series whose first change point falls at the
    same step changed *together* as far as the checkpoints can tell, so they are one row: ``series`` lists them,
    most confident and then largest change first, with their ``kinds``, ``sizes`` (in normalized NP; a slope
    change's size is how far it moved off its earlier trend by its next change) and ``confidences``.
    ``separable`` is False when the step is among the earliest a change point can have (``min_size``
    checkpoints from the start, as in the detector): a change that happened anywhere before it is reported
    there, so the spacing cannot order those series.
    """
    pd = require("pandas", "plot")
    changed = summary.dropna(subset=["first_change"])
    steps = sorted(frame["step"].dropna().unique())
    earliest = set(steps[max(0, min_size - 1): min_size + 1])
    rows = []
    for step, group in changed.groupby("first_change", sort=True):
        ranked = []
        for record in group.to_dict("records"):
            first: ChangePoint = record["changes"][0]
            name = f"block {int(record['block'])} {record['role']}" + (
                f" expert {int(record['expert'])}" if record.get("expert", -1) >= 0 else "") + (
                f" head {int(record['head'])}" if record["head"] >= 0 else "")
            confidence = first.confidence if first.confidence == first.confidence else 0.0
            ranked.append((confidence, abs(first.z), name, first))
        ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
        rows.append({"step": int(step), "n_series": len(ranked), "series": [r[2] for r in ranked],
                     "kinds": [r[3].kind for r in ranked], "sizes": [round(r[3].size, 6) for r in ranked],
                     "confidences": [round(r[3].confidence, 4) for r in ranked],
                     "separable": step not in earliest})
    return pd.DataFrame(rows, columns=["step", "n_series", "series", "kinds", "sizes", "confidences", "separable"])


def metric_changes(metrics: Any, detector: Detector | None = None) -> Any:
    """Change points of each per-step metric (``metrics``: long frame of run, metric, step, value, as the report
    reads ``trainer_state.json`` or ``--metrics FILE.csv``): one row per change, with run, metric, step, kind, z."""
    pd = require("pandas", "plot")
    rows = []
    for (run, metric), part in metrics.dropna(subset=["value"]).groupby(["run", "metric"]):
        part = part.groupby("step", as_index=False)["value"].mean().sort_values("step")
        for change in change_points(part["step"].to_numpy(), part["value"].to_numpy(), detector):
            rows.append({"run": run, "metric": metric, "step": change.step, "kind": change.kind, "z": change.z})
    return pd.DataFrame(rows, columns=["run", "metric", "step", "kind", "z"])


def nearest_metric_changes(role_changes: Any, metrics: Any, detector: Detector | None = None) -> Any:
    """For every change point of the role means (``change_summary(by="role")``), the nearest change point of any
    metric of the same run: its metric, step, kind, and ``lag`` = NP's step minus the metric's (negative: NP
    changed first). Blank where no metric has a change point."""
    pd = require("pandas", "plot")
    found = metric_changes(metrics, detector)
    rows = []
    for record in role_changes.to_dict("records"):
        for change in record["changes"]:
            theirs = found[(found["run"] == record["run"]) | (found["run"] == "")]  # "": a CSV for every run
            row = {"run": record["run"], "role": record["role"], "step": change.step, "kind": change.kind,
                   "metric": None, "metric_step": None, "metric_kind": None, "lag": None}
            if len(theirs):
                near = theirs.iloc[int((theirs["step"] - change.step).abs().to_numpy().argmin())]
                row.update(metric=near["metric"], metric_step=int(near["step"]), metric_kind=near["kind"],
                           lag=int(change.step - near["step"]))
            rows.append(row)
    return pd.DataFrame(rows, columns=["run", "role", "step", "kind", "metric", "metric_step", "metric_kind", "lag"])
