"""The tables of ``experiments/results/DYNAMICS.md``, rendered from the studies' result files.

Run: ``python experiments/dynamics/tables.py [--induction DIR] [--induction-kjv DIR] [--grokking DIR]``
(defaults: the committed ``results/induction``, ``results/induction-kjv`` and ``results/grokking``); prints
Markdown.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import induction  # noqa: E402
import study  # noqa: E402

HERE = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Timing:
    """A study profile's window (steps either side that count as "at" a step), the placebo offset (steps after the
    transition where nothing is known to happen) and its last step."""

    window: int
    placebo: int
    last_step: int

    @classmethod
    def of(cls, profile: str, placebo: int) -> Timing:
        """The window and last step of one of the induction study's profiles."""
        settings = induction.PROFILES[profile]
        return cls(window=settings.window, placebo=placebo, last_step=settings.steps)


RANDOM_TOKENS = Timing.of("full", placebo=1000)
KJV = Timing.of("kjv-full", placebo=600)


def _step(value: float) -> str:
    return "none" if not np.isfinite(value) else f"{value:.0f}"


def _lag(value: float) -> str:
    return "none" if not np.isfinite(value) else f"{value:+.0f}"


def _before_after(frame: pd.DataFrame, column: str, step: float, window: int) -> str:
    """The series' last value at least ``window`` steps before ``step`` and its first at least ``window`` after."""
    frame = frame.dropna(subset=[column]).sort_values("step")
    before = frame[frame["step"] <= step - window][column]
    after = frame[frame["step"] >= step + window][column]
    if not np.isfinite(step) or not len(before) or not len(after):
        return ""
    return f"{before.iloc[-1]:.1f} -> {after.iloc[0]:.1f}"


def induction_tables(folder: Path, timing: Timing = RANDOM_TOKENS) -> str:
    runs = pd.read_csv(folder / "runs.csv")
    heads = pd.read_csv(folder / "heads.csv")
    peer = pd.read_csv(folder / "peers.csv")
    parts = ["### Runs: the transition and each run-level signal's nearest change point (lag in steps)\n"]
    table = pd.DataFrame({
        "run": runs["run"], "transition": runs["transition"].map(lambda v: "none" if np.isnan(v) else f"{v:.0f}"),
        "induction / prev-token heads": [f"{a} / {b}" for a, b in zip(runs["induction_heads"],
                                                                      runs["previous_token_heads"])],
        "final ICL": runs["final_icl"].round(2),
        "loss": runs["loss_lag"].map(_lag), "ICL score": runs["icl_lag"].map(_lag),
        "mean NP": runs["mean_np_lag"].map(_lag), "alpha": runs["alpha_lag"].map(_lag),
        "LLC": runs["llc_lag"].map(_lag),
        "LLC before -> after": [_before_after(peer[peer["run"] == r], "llc", t, timing.window) for r, t in
                                zip(runs["run"], runs["transition"])],
        "NP stop": runs["np_stop"].map(lambda v: "never" if np.isnan(v) else f"{v:.0f}")})
    parts.append(study.markdown(table))
    parts.append("\n### Per head: change point at the head's own transition, and the move across it\n")
    pooled = []
    heads = heads[np.isfinite(heads["transition"])]  # a run without a transition has nothing to be at
    for role in ("q", "k", "v", "o"):
        mine = heads[heads["role"] == role]
        for kind in study.SERIES:
            row = {"role": role, "series": kind}
            for cls, label in (("induction", "induction"), ("previous-token", "prev-token"), ("other", "other")):
                part = mine[mine["class"] == cls]
                row[f"{label} heads with a change at it"] = (
                    f"{part[f'{kind}_lag'].notna().sum()}/{len(part)}" if len(part) else "")
            # The same question at a step where nothing is known to happen, well after the transition.
            changes = mine[f"{kind}_changes"].fillna("").map(lambda text: [int(float(v)) for v in str(text).split()])
            later = timing.placebo
            placebo = [np.isfinite(study.nearest(c, t + later, timing.window))
                       for c, t in zip(changes, mine["transition"])
                       if np.isfinite(t) and t + later + timing.window <= timing.last_step]
            row[f"any head with a change {later:,} steps later"] = f"{sum(placebo)}/{len(placebo)}"
            lags = mine[mine["class"] == "induction"][f"{kind}_lag"].dropna()
            row["induction heads' median lag"] = f"{lags.median():+.0f}" if len(lags) else ""
            layer1 = mine[mine["block"] == 1]
            row["AUROC induction vs other (layer 1)"] = study.auroc(layer1[f"{kind}_move"].to_numpy(),
                                                                    (layer1["class"] == "induction").to_numpy())
            layer0 = mine[mine["block"] == 0]
            row["AUROC prev-token vs other (layer 0)"] = study.auroc(
                layer0[f"{kind}_move"].to_numpy(), (layer0["class"] == "previous-token").to_numpy())
            pooled.append(row)
    parts.append(study.markdown(pd.DataFrame(pooled), digits=2))
    parts.append("\n### Cost per checkpoint on this machine (2 cores)\n")
    parts.append(cost_table(runs))
    return "\n".join(parts)


def cost_table(runs: pd.DataFrame) -> str:
    costs = pd.DataFrame([
        {"measure": "NP, every head and matrix, null model (8) and baselines (CLI)", "needs": "weights",
         "seconds": runs["np_seconds_per_checkpoint"].mean()},
        {"measure": "WeightWatcher alpha, every layer", "needs": "weights",
         "seconds": runs["alpha_seconds_per_checkpoint"].mean()},
        {"measure": "devinterp LLC (SGLD, settings in peers.py)", "needs": "training data, gradients",
         "seconds": runs["llc_seconds_per_checkpoint"].mean()}])
    return study.markdown(costs)


def _base_rate(changes: pd.Series, window: float = 200) -> float:
    """Share of series with a change point within ``window`` of a step, averaged over steps 500, 600, .., 3,500:
    how often "at grokking" would be met by chance."""
    lists = changes.fillna("").map(lambda text: [int(float(v)) for v in str(text).split()])
    steps = range(500, 3501, 100)
    return float(np.mean([[np.isfinite(study.nearest(c, s, window)) for c in lists] for s in steps]))


def grokking_tables(folder: Path) -> str:
    runs = pd.read_csv(folder / "runs.csv")
    series = pd.read_csv(folder / "series.csv")
    parts = ["### Runs: memorization, grokking, and each run-level signal's change point nearest grokking\n"]
    table = pd.DataFrame({
        "run": runs["run"], "memorization": runs["memorization"].map(_step), "grokking": runs["grokking"].map(_step),
        "final test acc": runs["final_test_acc"].round(3),
        "test acc": runs["test_acc_lag_grokking"].map(_lag), "Fourier share": runs["fourier_lag_grokking"].map(_lag),
        "mean NP": runs["mean_np_lag_grokking"].map(_lag), "mean rms": runs["mean_rms_lag_grokking"].map(_lag),
        "alpha": runs["alpha_lag_grokking"].map(_lag), "LLC": runs["llc_lag_grokking"].map(_lag),
        "r(mean NP, mean rms)": runs["r_np_rms"].round(3),
        "NP stop": runs["np_stop"].map(lambda v: "never" if np.isnan(v) else f"{v:.0f}")})
    parts.append(study.markdown(table))
    parts.append("\n### Per matrix: change points at memorization and at grokking\n")
    rows = []
    for role, group in series.groupby("role"):
        for kind in study.SERIES:
            at_grok = group[f"{kind}_lag_grokking"].dropna()
            rows.append({"role": role, "series": kind,
                         "at memorization": f"{group[f'{kind}_lag_memorization'].notna().sum()}/{len(group)}",
                         "at grokking": f"{len(at_grok)}/{len(group)}",
                         "median lag at grokking": f"{at_grok.median():+.0f}" if len(at_grok) else "",
                         "at a step of 500-3,500 (mean)": f"{_base_rate(group[f'{kind}_changes']):.2f}"})
    parts.append(study.markdown(pd.DataFrame(rows)))
    parts.append("\n### Cost per checkpoint on this machine (2 cores)\n")
    parts.append(cost_table(runs))
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--induction", type=Path, default=HERE / "induction")
    parser.add_argument("--induction-kjv", type=Path, default=HERE / "induction-kjv")
    parser.add_argument("--grokking", type=Path, default=HERE / "grokking")
    args = parser.parse_args(argv)
    print("## Induction heads\n")
    print(induction_tables(args.induction))
    print("\n## Induction heads on KJV text\n")
    print(induction_tables(args.induction_kjv, KJV))
    print("\n## Grokking\n")
    print(grokking_tables(args.grokking))


if __name__ == "__main__":
    main(sys.argv[1:])
