"""Plots of neural persistence results (needs ``neural-persistence[plot]``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..core.results import PersistenceDiagram

__all__ = ["compare_runs", "death_distribution", "depth_profile", "null_plot", "metrics_plot", "experts_heatmap", "heads_heatmap", "layer_heatmap", "plot_diagram", "role_trajectory_plot",
           "save"]


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


ROLE_ORDER = ("q", "k", "v", "o", "qkv", "mlp_gate", "mlp_up", "mlp_down", "router", "embed", "lm_head", "other")


def _roles(frame: Any) -> list[str]:
    present = set(frame["role"])
    return [r for r in ROLE_ORDER if r in present]


def save(fig: Any, path: str | Path) -> list[Path]:
    """Save a figure as PNG and SVG next to each other; returns both paths."""
    plt = _pyplot()
    path = Path(path)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    out = [path.with_suffix(".png"), path.with_suffix(".svg")]
    fig.savefig(out[0], dpi=110)
    fig.savefig(out[1])
    plt.close(fig)
    return out


def short_number(value: float) -> str:
    """A step as a tick label: 950, 12k, 1.5k, 143k, 2.1M."""
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.4g}"


def death_distribution(diagram: PersistenceDiagram, title: str = "") -> Any:
    """Where the merges of a diagram fall: every point is born at 1, so the diagram is a strip; its information
    is the distribution of deaths (normalized |w| of the spanning-tree edges), shown as a histogram and as the
    sorted persistences 1 - death whose p-norm is NP."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.5, 3.4), layout="constrained")
    deaths = np.sort(diagram.deaths[diagram.deaths > 0])
    left.hist(deaths, bins=min(60, max(10, len(deaths) // 10)), range=(0, 1), color="C0")
    left.set_xlabel("death (normalized |w| of the merging edge)")
    left.set_ylabel("merges")
    left.set_title(f"{len(deaths)} merges; births all 1", fontsize=9)
    persistence = np.sort(1 - deaths)[::-1]
    right.plot(np.arange(1, len(persistence) + 1), persistence, color="C1")
    right.set_xscale("log")
    right.set_xlabel("rank of the merge (longest-lived first)")
    right.set_ylabel("persistence 1 - death")
    right.set_title("persistences, whose 2-norm is NP", fontsize=9)
    fig.suptitle(title or "persistence diagram", fontsize=10)
    return fig


def layer_heatmap(frame: Any, run: str | None = None) -> Any:
    """Normalized NP by block (rows) and step (columns), one panel per role (heads averaged)."""
    plt = _pyplot()
    data = frame if run is None else frame[frame["run"] == run]
    data = data.dropna(subset=["step"])
    roles = _roles(data)
    ncols = min(4, len(roles))
    nrows = -(-len(roles) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols + 1, 3.0 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(roles):]:
        ax.set_visible(False)
    vmin, vmax = data["normalized_np"].min(), data["normalized_np"].max()
    image = None
    for ax, role in zip(axes.ravel(), roles):
        grid = data[data["role"] == role].pivot_table(index="block", columns="step", values="normalized_np")
        image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(role)
        ax.set_xlabel("step")
        # Columns are checkpoints (uneven in steps): a few ticks at checkpoint steps, written short.
        ticks = np.unique(np.linspace(0, grid.shape[1] - 1, min(6, grid.shape[1])).round().astype(int))
        ax.set_xticks(ticks, [short_number(grid.columns[t]) for t in ticks], fontsize=7, rotation=45, ha="right")
        ax.set_yticks(range(grid.shape[0]), [str(b) for b in grid.index], fontsize=7)
        ax.set_ylabel("block")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="normalized NP", shrink=0.8)
    fig.suptitle("normalized NP by block and step")
    return fig


def null_plot(frame: Any) -> Any:
    """Per role: mean normalized NP over steps beside that of the same weights shuffled (the null model, with a
    band of one null standard deviation); where the lines run together, NP follows the weights' distribution."""
    plt = _pyplot()
    data = frame.dropna(subset=["step", "null_normalized_np"])
    roles = _roles(data)
    ncols = min(4, len(roles))
    nrows = -(-len(roles) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.5, 2.8 * nrows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.ravel()[len(roles):]:
        ax.set_visible(False)
    for ax, role in zip(axes.ravel(), roles):
        for i, (run, part) in enumerate(data[data["role"] == role].groupby("run")):
            bound = part["normalized_np"] / part["np"]  # normalized / raw: 1 / the bound, per matrix
            part = part.assign(null_band=part["null_np_std"] * bound)
            means = part.groupby("step")[["normalized_np", "null_normalized_np", "null_band"]].mean()
            label = "" if data["run"].nunique() == 1 else f"{run}: "
            ax.plot(means.index, means["normalized_np"], color=f"C{i}", marker=".", label=f"{label}NP")
            ax.plot(means.index, means["null_normalized_np"], color=f"C{i}", ls="--", label=f"{label}shuffled")
            ax.fill_between(means.index, means["null_normalized_np"] - means["null_band"],
                            means["null_normalized_np"] + means["null_band"], color=f"C{i}", alpha=0.15, lw=0)
        ax.set_title(role)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("mean normalized NP")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("NP beside its null model (the same weights shuffled; band: one null std)")
    return fig


def depth_profile(frames: dict[str, Any]) -> Any:
    """Mean normalized NP per role against relative depth (block / number of blocks), one panel per role and a
    line per model: models (or single checkpoints) of different sizes on one axis, where there is no step."""
    plt = _pyplot()
    roles = _roles(__import__("pandas").concat(list(frames.values())))
    roles = [r for r in roles if r not in ("embed", "lm_head", "other")] or roles
    ncols = min(4, len(roles))
    nrows = -(-len(roles) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.5, 2.9 * nrows + 0.6), squeeze=False,
                             sharey=True, layout="constrained")
    for ax in axes.ravel()[len(roles):]:
        ax.set_visible(False)
    for ax, role in zip(axes.ravel(), roles):
        for i, (name, frame) in enumerate(frames.items()):
            part = frame[(frame["role"] == role) & (frame["block"] >= 0)]
            if part.empty:
                continue
            means = part.groupby("block")["normalized_np"].mean()
            depth = (means.index + 0.5) / (frame["block"].max() + 1)
            ax.plot(depth, means.to_numpy(), marker=".", color=f"C{i}", label=name)
        ax.set_title(role)
        ax.set_xlabel("relative depth (block / blocks)")
        ax.set_xlim(0, 1)
    axes[0][0].set_ylabel("mean normalized NP")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("normalized NP by depth (mean over heads and experts)")
    return fig


def metrics_plot(metrics: Any, frame: Any) -> Any:
    """Training metrics (loss, eval loss, ...) above mean normalized NP, on one step axis."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 5.6), sharex=True, layout="constrained")
    for i, ((run, metric), part) in enumerate(metrics.groupby(["run", "metric"])):
        part = part.sort_values("step")
        label = metric if metrics["run"].nunique() == 1 else f"{run}: {metric}"
        top.plot(part["step"], part["value"], color=f"C{i}", label=label, marker="." if len(part) < 60 else None)
    top.set_ylabel("logged value")
    top.legend(fontsize=7)
    top.set_title("training metrics (trainer_state.json or --metrics) and neural persistence")
    means = frame.dropna(subset=["step"]).groupby(["run", "step"])["normalized_np"].mean().reset_index()
    for i, (run, part) in enumerate(means.groupby("run")):
        bottom.plot(part["step"], part["normalized_np"], marker=".", color=f"C{i}", label=str(run))
    bottom.set_xlabel("step")
    bottom.set_ylabel("mean normalized NP")
    bottom.legend(fontsize=7)
    return fig


def role_trajectory_plot(frame: Any, changes: Any = None, x: str = "step") -> Any:
    """Mean normalized NP per role over training, one line per (run, role); change points as dotted lines."""
    from .trajectory import role_trajectories

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    means = role_trajectories(frame.dropna(subset=["step"]))
    runs = list(dict.fromkeys(means["run"]))
    styles = ["-", "--", ":", "-."]
    for i, run in enumerate(runs):
        for j, role in enumerate(_roles(means[means["run"] == run])):
            series = means[(means["run"] == run) & (means["role"] == role)]
            label = role if len(runs) == 1 else f"{run}: {role}"
            ax.plot(series["step"], series["normalized_np"], styles[i % 4], color=f"C{j}", marker=".", label=label)
            if changes is not None:
                row = changes[(changes["run"] == run) & (changes["role"] == role)]
                for change in (row["changes"].iloc[0] if len(row) else []):
                    ax.axvline(change.step, color=f"C{j}", ls=":", lw=1, alpha=0.8)
                    ax.annotate(f"{role}: {change.kind}", (change.step, 1.0), xycoords=("data", "axes fraction"),
                                rotation=90, va="top", ha="right", fontsize=6.5, color=f"C{j}")
    ax.set_xlabel(x)
    ax.set_ylabel("mean normalized NP")
    experts = "expert" in frame and (frame["expert"] >= 0).any()
    ax.set_title("neural persistence per role, mean over blocks, heads" + (" and experts" if experts else "")
                 + (" (dotted: change points)" if changes is not None else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return fig


def heads_heatmap(frame: Any, checkpoint: str, run: str | None = None,
                  scale: tuple[float, float] | None = None) -> Any:
    """Normalized NP of every attention head at one checkpoint: block (rows) x head (columns), per role, on one
    colour scale (``scale``: (min, max), to share it with another checkpoint's heatmap)."""
    data = frame[(frame["checkpoint"] == checkpoint) & (frame["head"] >= 0)]
    if run is not None:
        data = data[data["run"] == run]
    roles = [r for r in ("q", "k", "v", "o") if r in set(data["role"])]
    if not roles:
        raise ValueError(f"no per-head results at checkpoint {checkpoint!r}; analyse with per_head=True")
    return _block_grid(data, roles, "head", f"per-head normalized NP at {checkpoint}", "magma", width=3.0,
                       scale=scale)


def head_step_grid(frame: Any, role: str, run: str | None = None) -> tuple[Any, list[tuple[int, int]], list[float]]:
    """Normalized NP of every head of one role over training: rows (block, head), columns steps; the row keys and
    the steps."""
    data = frame[(frame["head"] >= 0) & (frame["role"] == role)].dropna(subset=["step"])
    if run is not None:
        data = data[data["run"] == run]
    grid = data.pivot_table(index=["block", "head"], columns="step", values="normalized_np").sort_index()
    return grid.to_numpy(), [(int(b), int(h)) for b, h in grid.index], [float(s) for s in grid.columns]


def head_step_heatmap(frame: Any, first_changes_by_head: dict[tuple[str, int, int], float] | None = None,
                      run: str | None = None) -> Any:
    """Every head over training, one panel per role: rows are (block, head), columns checkpoints, one colour scale
    for all panels; a white dot marks each head's first change point (``first_changes_by_head``: (role, block,
    head) -> step)."""
    plt = _pyplot()
    data = frame[frame["head"] >= 0]
    roles = [r for r in ("q", "k", "v", "o") if r in set(data["role"])]
    if not roles:
        raise ValueError("no per-head results; analyse with per_head=True")
    vmin, vmax = data["normalized_np"].min(), data["normalized_np"].max()
    rows = max(len(head_step_grid(frame, r, run)[1]) for r in roles)
    fig, axes = plt.subplots(1, len(roles), figsize=(3.2 * len(roles) + 1, min(12, 2 + 0.06 * rows)), squeeze=False,
                             layout="constrained")
    image = None
    for ax, role in zip(axes[0], roles):
        values, keys, steps = head_step_grid(frame, role, run)
        image = ax.imshow(values, aspect="auto", origin="lower", vmin=vmin, vmax=vmax, cmap="magma",
                          interpolation="nearest")
        ax.set_title(role)
        ticks = list(range(len(steps)))[:: max(1, len(steps) // 6)]
        ax.set_xticks(ticks, [short_number(steps[t]) for t in ticks], fontsize=7, rotation=45)
        ax.set_xlabel("step")
        starts = [i for i, (b, h) in enumerate(keys) if i == 0 or keys[i - 1][0] != b]
        ax.set_yticks(starts, [f"block {keys[i][0]}" for i in starts], fontsize=6)
        for i in starts[1:]:
            ax.axhline(i - 0.5, color="white", lw=0.4)
        if first_changes_by_head:
            marks = [(steps.index(first_changes_by_head[(role, b, h)]), i) for i, (b, h) in enumerate(keys)
                     if (role, b, h) in first_changes_by_head and first_changes_by_head[(role, b, h)] in steps]
            if marks:
                ax.scatter([m[0] for m in marks], [m[1] for m in marks], s=6, c="white", marker="o", lw=0)
    axes[0][0].set_ylabel("block, head")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="normalized NP", shrink=0.8)
    fig.suptitle("every head over training" + (" (dots: first change point)" if first_changes_by_head else ""))
    return fig


def first_change_by_head(by_matrix: Any) -> dict[tuple[str, int, int], float]:
    """(role, block, head) -> step of the head's first change point, from ``change_summary(by="matrix")``."""
    heads = by_matrix[(by_matrix["head"] >= 0) & by_matrix["first_change"].notna()]
    return {(r.role, int(r.block), int(r.head)): float(r.first_change) for r in heads.itertuples()}


def experts_heatmap(frame: Any, checkpoint: str, run: str | None = None) -> Any:
    """Normalized NP of every expert at one checkpoint: block (rows) x expert (columns), one panel per MLP role,
    on one colour scale (so that the experts of a block can be told apart, where role means mix them)."""
    data = frame[(frame["checkpoint"] == checkpoint) & (frame["expert"] >= 0)]
    if run is not None:
        data = data[data["run"] == run]
    roles = _roles(data)
    if not roles:
        raise ValueError(f"no experts at checkpoint {checkpoint!r}: not a mixture-of-experts model")
    return _block_grid(data, roles, "expert", f"per-expert normalized NP at {checkpoint}", "cividis", width=3.2)


def _block_grid(data: Any, roles: list[str], column: str, title: str, cmap: str, width: float,
                scale: tuple[float, float] | None = None) -> Any:
    """One panel per role of block (rows) x ``column`` (columns), all on one colour scale."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(roles), figsize=(width * len(roles) + 1, 3.4), squeeze=False, layout="constrained")
    vmin, vmax = scale if scale is not None else (data["normalized_np"].min(), data["normalized_np"].max())
    image = None
    for ax, role in zip(axes[0], roles):
        grid = data[data["role"] == role].pivot_table(index="block", columns=column, values="normalized_np")
        image = ax.imshow(grid.to_numpy(), aspect="auto", origin="lower", vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_title(role)
        ax.set_xlabel(column)
        ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), [str(b) for b in grid.index], fontsize=7)
    axes[0][0].set_ylabel("block")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="normalized NP", shrink=0.8)
    fig.suptitle(title)
    return fig


def seeds_plot(bands: Any) -> Any:
    """Per configuration (one panel each): every role's mean over seeds, with a band of one standard deviation
    and the seeds' minimum and maximum dotted."""
    plt = _pyplot()
    configs = list(dict.fromkeys(bands["configuration"]))
    fig, axes = plt.subplots(1, len(configs), figsize=(5.5 * len(configs), 3.8), squeeze=False, layout="constrained")
    for ax, config in zip(axes[0], configs):
        part = bands[bands["configuration"] == config]
        for role in [r for r in ROLE_ORDER if r in set(part["role"])]:
            series = part[part["role"] == role].sort_values("step")
            line, = ax.plot(series["step"], series["mean"], label=role, lw=1.2)
            std = series["std"].fillna(0)
            ax.fill_between(series["step"], series["mean"] - std, series["mean"] + std, color=line.get_color(),
                            alpha=0.2, lw=0)
            ax.plot(series["step"], series["min"], ":", color=line.get_color(), lw=0.6)
            ax.plot(series["step"], series["max"], ":", color=line.get_color(), lw=0.6)
        ax.set_title(f"{config} ({int(part['seeds'].max())} seeds)", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("mean normalized NP")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle("seeds of one configuration: mean, ±1 std band, min and max dotted", fontsize=10)
    return fig


def compare_runs(frames: dict[str, Any], x: str = "step") -> Any:
    """Mean normalized NP over all matrices, one line per run, against ``step`` or ``tokens``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, frame) in enumerate(frames.items()):
        if x not in frame or frame[x].isna().all():
            continue
        series = frame.groupby(x)["normalized_np"].mean()
        ax.plot(series.index, series.to_numpy(), marker=".", color=f"C{i}", label=name)
    ax.set_xlabel(x)
    ax.set_ylabel("mean normalized NP")
    ax.set_title(f"runs compared by {x}")
    ax.legend(fontsize=8)
    return fig
