"""Interactive figures for the HTML reports (plotly): zoom on trajectories, hover on head heatmaps.

Why plotly: one self-contained page that works offline. Its JavaScript is written once into the page (no
network, no CDN), each figure is a ``<div>``; the static PNG/SVG figures stay in ``plots/`` for papers.
"""

from __future__ import annotations

from typing import Any

from .._optional import require
from .plots import ROLE_ORDER

__all__ = ["head_heatmaps", "head_steps", "page_script", "runs_by", "trajectories"]

_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "svg"}}


def page_script() -> str:
    """The plotly.js library as one inline ``<script>``, to be placed once in the page's head."""
    offline = require("plotly.offline", "plot")
    return f"<script>{offline.get_plotlyjs()}</script>"


def _div(figure: Any, name: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=name, config=_CONFIG)


def _roles(frame: Any) -> list[str]:
    present = set(frame["role"])
    return [r for r in ROLE_ORDER if r in present]


def trajectories(frame: Any, changes: Any = None, metrics: Any = None, name: str = "np-trajectories") -> str:
    """Mean normalized NP per (run, role) over steps, change points as dotted lines named by role and kind,
    and training metrics above on the same (linked) step axis when given."""
    go = require("plotly.graph_objects", "plot")
    subplots = require("plotly.subplots", "plot")
    from .trajectory import role_trajectories

    means = role_trajectories(frame.dropna(subset=["step"]))
    has_metrics = metrics is not None and len(metrics) > 0
    figure = subplots.make_subplots(rows=2 if has_metrics else 1, cols=1, shared_xaxes=True,
                                    vertical_spacing=0.06, row_heights=[0.35, 0.65] if has_metrics else None)
    row = 2 if has_metrics else 1
    if has_metrics:
        for (run, metric), part in metrics.groupby(["run", "metric"]):
            part = part.sort_values("step")
            label = metric if metrics["run"].nunique() == 1 else f"{run}: {metric}"
            figure.add_trace(go.Scatter(x=part["step"], y=part["value"], name=label, mode="lines",
                                        legendgroup="metrics"), row=1, col=1)
        figure.update_yaxes(title_text="logged value", row=1, col=1)
    runs = list(dict.fromkeys(means["run"]))
    palette = require("plotly.colors", "plot").qualitative.Plotly
    dashes = ["solid", "dash", "dot", "dashdot"]
    for i, run in enumerate(runs):
        for j, role in enumerate(_roles(means[means["run"] == run])):
            series = means[(means["run"] == run) & (means["role"] == role)]
            label = role if len(runs) == 1 else f"{run}: {role}"
            colour = palette[j % len(palette)]
            figure.add_trace(go.Scatter(x=series["step"], y=series["normalized_np"], name=label,
                                        mode="lines+markers", line={"color": colour, "dash": dashes[i % 4]},
                                        hovertemplate=f"{label}<br>step %{{x}}<br>NP %{{y:.4f}}<extra></extra>"),
                             row=row, col=1)
            if changes is None:
                continue
            found = changes[(changes["run"] == run) & (changes["role"] == role)]
            for change in (found["changes"].iloc[0] if len(found) else []):
                figure.add_vline(x=change.step, line={"color": colour, "dash": "dot", "width": 1}, row=row, col=1,
                                 annotation={"text": f"{role}: {change.kind}", "textangle": -90,
                                             "font": {"size": 9, "color": colour}},
                                 annotation_position="top")
    figure.update_yaxes(title_text="mean normalized NP", row=row, col=1)
    figure.update_xaxes(title_text="step", row=row, col=1)
    figure.update_layout(height=620 if has_metrics else 460, margin={"l": 60, "r": 20, "t": 30, "b": 40},
                         hovermode="closest", legend={"font": {"size": 10}})
    return _div(figure, name)


def head_heatmaps(frame: Any, checkpoints: list[str], scale: tuple[float, float],
                  name: str = "np-heads") -> str:
    """Per-head normalized NP, block x head, one panel per (checkpoint, role), all on the colour scale
    ``scale``; hovering a cell names its block, head and value."""
    go = require("plotly.graph_objects", "plot")
    subplots = require("plotly.subplots", "plot")
    heads = frame[frame["head"] >= 0]
    roles = [r for r in ("q", "k", "v", "o") if r in set(heads["role"])]
    titles = [f"{role} at {checkpoint}" for checkpoint in checkpoints for role in roles]
    figure = subplots.make_subplots(rows=len(checkpoints), cols=len(roles), subplot_titles=titles,
                                    horizontal_spacing=0.04, vertical_spacing=0.12)
    for r, checkpoint in enumerate(checkpoints, start=1):
        for c, role in enumerate(roles, start=1):
            grid = heads[(heads["checkpoint"] == checkpoint) & (heads["role"] == role)].pivot_table(
                index="block", columns="head", values="normalized_np")
            figure.add_trace(go.Heatmap(
                z=grid.to_numpy(), x=[str(h) for h in grid.columns], y=[str(b) for b in grid.index],
                zmin=scale[0], zmax=scale[1], colorscale="Magma", showscale=(r == 1 and c == len(roles)),
                colorbar={"title": {"text": "normalized NP"}},
                hovertemplate=f"{role} block %{{y}} head %{{x}}<br>NP %{{z:.4f}}<extra>{checkpoint}</extra>"),
                row=r, col=c)
            figure.update_xaxes(title_text="head", row=r, col=c, type="category")
            figure.update_yaxes(title_text="block" if c == 1 else None, row=r, col=c, type="category")
    figure.update_layout(height=320 * len(checkpoints) + 60, margin={"l": 50, "r": 20, "t": 40, "b": 40})
    return _div(figure, name)


def head_steps(frame: Any, first_changes: dict[tuple[str, int, int], float] | None = None,
               name: str = "np-head-steps") -> str:
    """Every head over training, one heatmap per role on one colour scale: rows (block, head), columns steps;
    hover for block, head, step and value; markers at each head's first change point."""
    go = require("plotly.graph_objects", "plot")
    subplots = require("plotly.subplots", "plot")
    from .plots import head_step_grid

    data = frame[frame["head"] >= 0]
    roles = [r for r in ("q", "k", "v", "o") if r in set(data["role"])]
    vmin, vmax = float(data["normalized_np"].min()), float(data["normalized_np"].max())
    figure = subplots.make_subplots(rows=1, cols=len(roles), subplot_titles=roles, horizontal_spacing=0.04)
    for i, role in enumerate(roles, 1):
        values, keys, steps = head_step_grid(frame, role)
        labels = [f"block {b} head {h}" for b, h in keys]
        figure.add_trace(go.Heatmap(z=values, x=steps, y=list(range(len(keys))), zmin=vmin, zmax=vmax,
                                    colorscale="Magma", showscale=i == len(roles), customdata=[[lab] * len(steps)
                                                                                               for lab in labels],
                                    hovertemplate="%{customdata}<br>step %{x}<br>NP %{z:.4f}<extra>" + role
                                    + "</extra>", colorbar={"title": {"text": "normalized NP"}}), row=1, col=i)
        if first_changes:
            marks = [(first_changes[(role, b, h)], j) for j, (b, h) in enumerate(keys) if (role, b, h) in first_changes]
            if marks:
                figure.add_trace(go.Scatter(x=[m[0] for m in marks], y=[m[1] for m in marks], mode="markers",
                                            marker={"color": "white", "size": 5, "line": {"width": 0}},
                                            name="first change point", showlegend=i == 1,
                                            hovertemplate="first change at step %{x}<extra></extra>"), row=1, col=i)
        starts = [j for j, (b, _) in enumerate(keys) if j == 0 or keys[j - 1][0] != b]
        figure.update_yaxes(tickvals=starts, ticktext=[f"block {keys[j][0]}" for j in starts], row=1, col=i)
        figure.update_xaxes(title_text="step", row=1, col=i)
    figure.update_layout(height=min(900, 260 + 4 * max(len(head_step_grid(frame, r)[1]) for r in roles)),
                         margin={"l": 60, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h"})
    return _div(figure, name)


def runs_by(frames: dict[str, Any], x: str, name: str) -> str:
    """Mean normalized NP over all matrices, one line per run, against ``step`` or ``tokens``."""
    go = require("plotly.graph_objects", "plot")
    figure = go.Figure()
    for run, frame in frames.items():
        if x not in frame or frame[x].isna().all():
            continue
        series = frame.groupby(x)["normalized_np"].mean()
        figure.add_trace(go.Scatter(x=series.index, y=series.to_numpy(), name=run, mode="lines+markers",
                                    hovertemplate=f"{run}<br>{x} %{{x}}<br>NP %{{y:.4f}}<extra></extra>"))
    figure.update_layout(height=420, xaxis_title=x, yaxis_title="mean normalized NP",
                         margin={"l": 60, "r": 20, "t": 30, "b": 40})
    return _div(figure, name)
