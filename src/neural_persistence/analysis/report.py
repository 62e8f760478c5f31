"""``report``: the plots of a finished analysis and a one-page ``report.html`` that shows them with key tables."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .plots import (
    compare_runs,
    depth_profile,
    experts_heatmap,
    first_change_by_head,
    head_step_heatmap,
    heads_heatmap,
    layer_heatmap,
    metrics_plot,
    role_trajectory_plot,
    save,
)
from .store import Completeness, Store
from .table import load_table
from .changepoints import Detector, TrendChangeDetector
from .seeds import seed_bands, seed_change_spread, seed_groups
from .trajectory import change_summary, changes_shown, first_changes, nearest_metric_changes, role_trajectories

__all__ = ["Report", "compare", "report"]


@dataclass
class Report:
    """What a report wrote: the HTML page, the figures, and the tables shown."""

    html: Path
    figures: list[Path] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)
    completeness: Completeness | None = None  # of the analysis reported (None for compare)


def _table_html(frame: Any, digits: int = 4) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.{digits}f}", border=0, classes="t")


_STYLE = """<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}table.t{border-collapse:collapse;font-size:13px}
table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}h2{margin-top:1.6em}</style>"""


_READING = """<p><b>How to read it.</b> Each weight matrix is a bipartite graph whose edges weigh |w| / w_max
(w_max: the largest |w| of the checkpoint under <i>global</i> normalization, of the matrix under <i>layer</i>, of
its role under <i>role</i>). Adding edges from the strongest down, each edge that joins two components ends a
component's life; neural persistence (Rieck et al., ICLR 2019) is the 2-norm of those lifetimes, and normalized
NP divides it by its largest possible value, so it lies in [0, 1] (a little above 1 only by the essential
component). High: a few strong weights connect the graph and the rest is weak (concentrated, structured
weights); low: weights of similar size everywhere. It largely follows the spread of |w| / w_max (Girrbach et
al. 2023), so compare it with simple statistics before reading structure into it.</p>"""


def report(out: str | Path, *, normalization: str = "global", detector: Detector | None = None,
           extra_sections: list[tuple[str, str]] | None = None, metrics: str | Path | bool = True,
           interactive: bool = True) -> Report:
    """Write ``plots/*.png|svg`` and ``report.html`` into the analysis folder ``out`` (``plots-layer/`` and
    ``report-layer.html`` for ``normalization="layer"``, and so on: reports of other normalizations are kept).

    ``detector`` finds the change points (default :class:`TrendChangeDetector` ``()``).
    ``extra_sections`` are (title, HTML) pairs placed before the tables (the demo adds loss curves there).
    ``metrics``: True plots the loss and evaluation curves of the runs' ``trainer_state.json`` above mean NP on
    the same step axis; a path reads a CSV of per-step columns instead; False leaves them out.
    ``interactive``: the page's trajectories and head heatmaps are plotly figures (zoom, hover; the library is
    written into the page, which stays self-contained and works offline); False shows the static PNGs only.
    """
    out = Path(out)
    frame = load_table(out, normalization=normalization)
    if frame.empty:
        raise ValueError(f"{out}: the analysis holds no results yet")
    # One report per normalization, side by side: report.html and plots/ for global, report-layer.html and
    # plots-layer/ for layer, ...
    suffix = "" if normalization == "global" else f"-{normalization}"
    plots = out / f"plots{suffix}"
    plots.mkdir(exist_ok=True)
    result = Report(out / f"report{suffix}.html")
    detector = detector or TrendChangeDetector()
    changes = change_summary(frame, by="role", detector=detector)
    by_matrix = change_summary(frame, by="matrix", detector=detector)
    stepped = bool(frame["step"].notna().any())  # a training run, not a single model
    curves = _metrics(out, metrics) if stepped and metrics is not False else None
    if curves is not None and len(curves):
        result.figures += save(metrics_plot(curves, frame), plots / "metrics")
        result.tables["metrics"] = curves
        result.tables["metric_alignment"] = nearest_metric_changes(changes, curves, detector)
    if stepped:
        result.figures += save(role_trajectory_plot(frame, changes), plots / "trajectories")
        result.figures += save(layer_heatmap(frame), plots / "layer_heatmap")
    else:
        result.figures += save(depth_profile({name: part for name, part in frame.groupby("run")}), plots / "depth")
    checkpoints = frame.dropna(subset=["step"]).sort_values("step")["checkpoint"].unique().tolist() or \
        frame["checkpoint"].unique().tolist()
    has_heads = bool((frame["head"] >= 0).any())
    scale = (0.0, 1.0)
    if has_heads:
        ends = frame[frame["checkpoint"].isin([checkpoints[0], checkpoints[-1]]) & (frame["head"] >= 0)]
        scale = (float(ends["normalized_np"].min()), float(ends["normalized_np"].max()))  # first and last alike
        for label, ckpt in (("first", checkpoints[0]), ("last", checkpoints[-1])):
            result.figures += save(heads_heatmap(frame, ckpt, scale=scale), plots / f"heads_{label}")
        if stepped:
            head_changes = first_change_by_head(by_matrix)
            result.figures += save(head_step_heatmap(frame, head_changes), plots / "head_steps")
    has_experts = (frame["expert"] >= 0).any()
    if has_experts:
        result.figures += save(experts_heatmap(frame, checkpoints[-1]), plots / "experts_last")
    result.figures += _diagram_figure(out, frame, by_matrix, checkpoints[-1], plots)
    has_structure = "null_np" in frame.columns or "rms" in frame.columns
    if has_structure:
        from .plots import null_plot
        from .structure import structure_summary

        result.tables["structure"] = structure_summary(frame)
        if stepped and "null_np" in frame.columns:
            result.figures += save(null_plot(frame), plots / "null")
    last = frame[frame["checkpoint"] == checkpoints[-1]]
    result.tables["roles_last"] = last.groupby("role")["normalized_np"].agg(["mean", "min", "max", "count"]).reset_index()
    result.tables["role_changes"] = changes
    result.tables["first_changes"] = first_changes(frame, by_matrix)
    with Store(out, write=False) as store:
        errors = store.errors()
        completeness = store.completeness(frame.attrs["options"])
    result.tables["errors"] = errors
    result.completeness = completeness
    warn = ' style="color:#b00"' if completeness.missing or completeness.failed else ""
    sections = [f"<h1>Neural persistence report</h1><p>{len(checkpoints)} checkpoints, "
                f"{frame['tensor'].nunique()} tensors, {len(frame)} measured matrices; normalization "
                f"<b>{normalization}</b>; change points: {html.escape(_detector_words(detector))}.</p>"
                f"<p{warn}>{html.escape(completeness.sentence())}.</p>" + _READING]
    for title, body in extra_sections or []:
        sections.append(f"<h2>{html.escape(title)}</h2>{body}")
    pngs = [f for f in result.figures if f.suffix == ".png"]
    if stepped and interactive:
        from . import interactive as live

        title = "Training metrics and trajectories per role" if curves is not None and len(curves) else \
            "Trajectories per role"
        sections.append(f"<h2>{title}</h2><p>Drag to zoom (double-click: back), hover for values, click a legend "
                        f"entry to hide it; dotted lines: change points, named by role and kind. Static copies: "
                        f"{_links(plots, pngs, ('metrics', 'trajectories'))}.</p>"
                        + live.trajectories(frame, changes, curves))
    elif stepped:
        if curves is not None and len(curves):
            sections.append("<h2>Training metrics and NP</h2>" + "".join(
                f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "metrics"))
        sections.append("<h2>Trajectories per role</h2>" + "".join(
            f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "trajectories"))
    if stepped:
        sections.append("<h2>Layer x step</h2>" + "".join(
            f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "layer_heatmap"))
    else:
        sections.append("<h2>By depth and role</h2><p>One model, no training steps: normalized NP of each role "
                        "along the depth of the network.</p>" + "".join(
            f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "depth"))
    if has_heads and interactive:
        from . import interactive as live

        shown = list(dict.fromkeys([checkpoints[0], checkpoints[-1]]))
        sections.append("<h2>Heads at the first and last checkpoint</h2><p>One colour scale for both checkpoints "
                        f"({scale[0]:.4f} to {scale[1]:.4f}); hover a cell for its block, head and value. Static "
                        f"copies: {_links(plots, pngs, ('heads_first', 'heads_last'))}.</p>"
                        + live.head_heatmaps(frame, shown, scale))
    elif has_heads:
        sections.append("<h2>Heads at the first and last checkpoint</h2>" + "".join(
            f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem.startswith("heads_")))
    if has_heads and stepped:
        intro = ("<h2>Every head over training</h2><p>Rows are heads (grouped by block), columns checkpoints, one "
                 "colour scale for all roles; dots mark each head's first change point. A head whose row changes "
                 "colour when its neighbours do not is where to look.</p>")
        if interactive:
            from . import interactive as live

            sections.append(intro + live.head_steps(frame, head_changes) + f"<p>Static copy: "
                            f"{_links(plots, pngs, ('head_steps',))}.</p>")
        else:
            sections.append(intro + "".join(f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs
                                            if f.stem == "head_steps"))
    if has_experts:
        sections.append("<h2>Experts at the last checkpoint</h2><p>Per-role trajectories above average over the "
                        "experts of each block; here each expert is shown apart.</p>" + "".join(
            f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "experts_last"))
    if has_structure:
        sections.append("<h2>Structure or distribution?</h2><p>Per-layer NP largely follows the spread of the "
                        "weights (Girrbach et al. 2023). The null model measures the same weights shuffled "
                        "(<code>analyze --null K</code>): <i>structural_np</i> is (NP - null) / null std at the last "
                        "checkpoint, near 0 when the arrangement adds nothing a shuffle would not give; "
                        "<i>r_null</i> correlates NP's trajectory with the null's (near 1: NP moves with the "
                        "distribution alone); <i>best_baseline</i> is the simple statistic "
                        "(<code>--baselines</code>) whose trajectory correlates most with NP's, and <i>r_best</i> "
                        "that correlation. Where |r_best| is near 1, the trajectory restates that statistic.</p>"
                        + "".join(f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "null")
                        + _table_html(result.tables["structure"], digits=3))
    sections.append("<h2>A persistence diagram</h2><p>Of the matrix that changed first (else the first matrix), at "
                    "the last checkpoint.</p>" + "".join(
        f'<img src="{plots.name}/{f.name}" alt="{f.stem}">' for f in pngs if f.stem == "diagram"))
    sections.append(f"<h2>Roles at {html.escape(str(checkpoints[-1]))}</h2>" + _table_html(result.tables["roles_last"]))
    sections.append("<h2>Change points per role</h2><p>A level shift is a jump between two checkpoints; a "
                    "slope change a kink, sized by how far the series moved off its earlier trend by its next "
                    "change; sigma is the noise of the series around its trend; a smooth rise or fall is not a "
                    "change.</p>" + _table_html(changes_shown(changes)))
    if "metric_alignment" in result.tables:
        aligned = result.tables["metric_alignment"]
        sections.append("<h2>Change points beside the training metrics</h2><p>For each change point of a role's "
                        "mean NP, the nearest change point (same detector) of any logged metric of the run, and the "
                        "lag in steps (NP's step minus the metric's: negative when NP changed first).</p>"
                        + (_table_html(aligned) if len(aligned) else "<p>No role has a change point to align.</p>"))
    sections.append("<h2>Matrices that change first</h2><p>Series whose first change point falls at the same step "
                    "are one row: they changed together as far as the checkpoints tell (most confident, then "
                    "largest change first; "
                    "<i>separable</i> is false at the earliest step a change point can have, where the spacing cannot order them).</p>"
                    + (_table_html(_first_changes_shown(result.tables["first_changes"]))
                       if len(result.tables["first_changes"]) else
                       "<p><b>No matrix has a change point</b>: every series is a smooth trend plus noise as far "
                       "as its checkpoints tell.</p>"))
    if errors:
        sections.append("<h2>Tensors that could not be measured</h2><ul>" + "".join(
            f"<li>{html.escape(c)} / {html.escape(t)}: {html.escape(m)}</li>" for _, c, t, m in errors) + "</ul>")
    script = _script(interactive and (stepped or has_heads))
    result.html.write_text(f"<!doctype html><meta charset=utf-8><title>neural persistence</title>{_STYLE}{script}"
                           + "\n".join(sections))
    return result


def _links(plots: Path, pngs: list[Path], stems: tuple[str, ...]) -> str:
    found = [f for f in pngs if f.stem in stems]
    return ", ".join(f'<a href="{plots.name}/{f.name}">{f.name}</a>' for f in found) or "none"


def _script(needed: bool) -> str:
    if not needed:
        return ""
    from .interactive import page_script

    return page_script()


def _detector_words(detector: Detector) -> str:
    if isinstance(detector, TrendChangeDetector):
        return (f"level shifts and slope changes on a smooth trend, false-alarm rate {detector.alpha:g} per "
                f"series, at least {detector.min_size} checkpoints apart")
    return repr(detector)


def _first_changes_shown(groups: Any, names: int = 6) -> Any:
    """The first-change groups as a page shows them: at most ``names`` series a row, with kind, size and
    confidence."""
    shown = groups.head(10).copy()
    shown["series"] = [", ".join(f"{n} ({k} {v:+.3f}, conf. {c:.2f})" for n, k, v, c in list(zip(s, kk, z, cc))[:names])
                       + (" ..." if len(s) > names else "")
                       for s, kk, z, cc in zip(shown["series"], shown["kinds"], shown["sizes"], shown["confidences"])]
    return shown.drop(columns=["kinds", "sizes", "confidences"])


def _diagram_figure(out: Path, frame: Any, by_matrix: Any, checkpoint: str, plots: Path) -> list[Path]:
    """The diagram, at the last checkpoint, of the matrix that changed first (else the first matrix)."""
    from ..core.measures import diagram_from_tree
    from .plots import death_distribution

    pick = by_matrix.dropna(subset=["first_change"])
    pick = pick if len(pick) else by_matrix
    row = (pick if len(pick) else frame[frame["checkpoint"] == checkpoint]).iloc[0]  # no steps: the first matrix
    with Store(out, write=False) as store:
        tree = next((t for t in store.trees() if t.checkpoint == checkpoint and t.run == row["run"]
                     and t.tensor == row["tensor"] and t.role == row["role"] and t.head == row["head"]
                     and t.expert == row["expert"]), None)
    if tree is None:
        return []
    scale = frame[(frame["checkpoint"] == checkpoint) & (frame["tensor"] == row["tensor"])
                  & (frame["role"] == row["role"]) & (frame["head"] == row["head"])
                  & (frame["expert"] == row["expert"])]["scale"].iloc[0]
    label = (f"block {tree.block} {tree.role}" + (f" expert {tree.expert}" if tree.expert >= 0 else "")
             + (f" head {tree.head}" if tree.head >= 0 else ""))
    fig = death_distribution(diagram_from_tree(tree.tree, float(scale)), title=f"{label} at {checkpoint}")
    return save(fig, plots / "diagram")


def _metrics(out: Path, metrics: str | Path | bool) -> Any:
    from .metrics import metrics_from_csv, training_metrics

    if isinstance(metrics, bool):
        return training_metrics(out)
    return metrics_from_csv(metrics)


def _last_checkpoint(frame: Any) -> Any:
    """The rows of a run's last checkpoint (by step where known)."""
    ordered = frame.sort_values("step", na_position="first")
    return frame[frame["checkpoint"] == ordered["checkpoint"].iloc[-1]]


def compare(outs: list[str | Path], dest: str | Path, *, normalization: str = "global",
            interactive: bool = True, detector: Detector | None = None) -> Report:
    """Several analyses on common axes (step, and tokens where known): ``compare.html`` and plots in ``dest``.

    Runs that are seeds of one configuration (labels differing only by a trailing seed, see
    :mod:`~neural_persistence.analysis.seeds`) also get a mean and band over seeds and the spread of their change
    points (``detector``, default :class:`TrendChangeDetector`).

    ``interactive``: mean NP by step (and tokens) as zoomable plotly figures on the page, static copies beside.
    """
    dest = Path(dest)
    (dest / "plots").mkdir(parents=True, exist_ok=True)
    frames = {}
    notes = []
    options: dict[str, list[str]] = {}
    for out in outs:
        frame = load_table(out, normalization=normalization)
        options.setdefault(frame.attrs["options"], []).append(str(out))
        with Store(out, write=False) as store:
            notes.append(f"{out}: {store.completeness(frame.attrs['options']).sentence()}")
        for run, part in frame.groupby("run"):
            frames[run if len(outs) == 1 else f"{Path(out).name}/{run}"] = part
    if len(options) > 1:  # per-head against whole matrices, or with embeddings against without: not comparable
        raise ValueError("the analyses were measured with different options, so their numbers do not compare: "
                         + "; ".join(f"{k} in {', '.join(v)}" for k, v in options.items())
                         + "; analyse them with the same options (--per-head, --include-embeddings)")
    result = Report(dest / "compare.html")
    stepped_any = any(f["step"].notna().any() for f in frames.values())
    if stepped_any:
        result.figures += save(compare_runs(frames, "step"), dest / "plots" / "compare_step")
        if any(f["tokens"].notna().any() for f in frames.values()):
            result.figures += save(compare_runs(frames, "tokens"), dest / "plots" / "compare_tokens")
        joined = __import__("pandas").concat([f.assign(run=name) for name, f in frames.items()])
        result.figures += save(role_trajectory_plot(joined), dest / "plots" / "compare_roles")
    result.figures += save(depth_profile({n: _last_checkpoint(f) for n, f in frames.items()}),
                           dest / "plots" / "compare_depth")
    joined = __import__("pandas").concat([f.assign(run=name) for name, f in frames.items()])
    seeds_html = ""
    groups = seed_groups(list(frames))
    if groups and stepped_any:
        from .plots import seeds_plot

        bands = seed_bands(joined, groups)
        spread = seed_change_spread(joined, groups, detector)
        result.tables["seed_bands"], result.tables["seed_changes"] = bands, spread
        figures = save(seeds_plot(bands), dest / "plots" / "seeds")
        result.figures += figures
        seeds_html = ("<h2>Seeds of one configuration</h2><p>Runs whose labels differ only by a trailing seed "
                      "(<code>-seed1</code>, <code>_s2</code>) are one configuration: the mean over seeds of each "
                      "role's mean normalized NP, a band of one standard deviation, the seeds' range dotted; below, "
                      "each seed's first change point per role and their spread. A change the configuration has "
                      "shows in most seeds at nearly one step.</p>"
                      + "".join(f'<img src="plots/{f.name}" alt="seeds">' for f in figures if f.suffix == ".png")
                      + _table_html(spread, digits=1))
    summary = role_trajectories(joined).groupby(["run", "role"])["normalized_np"].agg(["first", "last"]).reset_index()
    result.tables["summary"] = summary
    live = ""
    stepped = any(f["step"].notna().any() for f in frames.values())
    if interactive and stepped:
        from .interactive import runs_by

        live = "<h2>Mean normalized NP by step</h2><p>Drag to zoom, hover for values.</p>" + runs_by(
            frames, "step", "compare-step")
        if any(f["tokens"].notna().any() for f in frames.values()):
            live += "<h2>... and by tokens seen</h2>" + runs_by(frames, "tokens", "compare-tokens")
    images = "".join(f'<img src="plots/{f.name}" alt="{f.stem}">' for f in result.figures
                     if f.suffix == ".png" and f.stem != "seeds"
                     and not (live and f.stem in ("compare_step", "compare_tokens")))
    result.tables["completeness"] = notes
    listed = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    result.html.write_text(f"<!doctype html><meta charset=utf-8><title>compare</title>{_STYLE}"
                           f"{_script(bool(live))}<h1>Runs compared</h1>"
                           f"<ul>{listed}</ul>{live}{seeds_html}{images}<h2>Mean normalized NP per role, first and last "
                           "checkpoint</h2>"
                           + _table_html(summary))
    return result
