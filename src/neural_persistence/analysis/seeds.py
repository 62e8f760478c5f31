"""Several seeds of one configuration: a mean and a band per step, and how far the change points spread.

Runs are seeds of one configuration when their labels differ only by a trailing seed (``run-seed1``,
``run_s2``, ``run.seed-3``). One seed's trajectory says little on its own: the band says what varies between
seeds, and a change point found in every seed at nearly the same step is one the configuration has.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .._optional import require
from .changepoints import Detector
from .trajectory import change_summary, role_trajectories

__all__ = ["configuration", "seed_bands", "seed_change_spread", "seed_groups"]

_SEED = re.compile(r"[-_.]?(?:seed|s)[-_]?(\d+)$", re.IGNORECASE)


def configuration(run: str) -> tuple[str, int | None]:
    """(configuration, seed) of a run label: ``gpt-small-seed3`` -> (``gpt-small``, 3); in ``compare``'s
    ``OUT/RUN`` labels, either part may carry the seed (``np-seed3/run``). No seed: (run, None)."""
    parts = run.split("/")
    for i in reversed(range(len(parts))):
        match = _SEED.search(parts[i])
        if match and match.start() > 0:
            rest = parts[:i] + [parts[i][: match.start()]] + parts[i + 1:]
            return "/".join(rest), int(match.group(1))
    return run, None


def seed_groups(runs: list[str]) -> dict[str, list[str]]:
    """Configurations with at least two seeds -> their runs."""
    groups: dict[str, list[str]] = {}
    for run in runs:
        config, seed = configuration(run)
        if seed is not None:
            groups.setdefault(config, []).append(run)
    return {k: sorted(v) for k, v in groups.items() if len(v) >= 2}


def seed_bands(frame: Any, groups: dict[str, list[str]]) -> Any:
    """Per configuration, role and step: mean, std, min and max over seeds of each seed's mean normalized NP, and
    how many seeds have that step."""
    means = role_trajectories(frame.dropna(subset=["step"]))
    rows = []
    for config, runs in groups.items():
        part = means[means["run"].isin(runs)]
        for (role, step), cell in part.groupby(["role", "step"]):
            values = cell["normalized_np"].to_numpy()
            rows.append({"configuration": config, "role": role, "step": step, "seeds": len(values),
                         "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else np.nan,
                         "min": float(values.min()), "max": float(values.max())})
    pd = require("pandas", "plot")
    return pd.DataFrame(rows, columns=["configuration", "role", "step", "seeds", "mean", "std", "min", "max"])


def seed_change_spread(frame: Any, groups: dict[str, list[str]], detector: Detector | None = None) -> Any:
    """Per configuration and role: each seed's first change point of the role mean, how many seeds have one, and
    the spread of their steps (mean, std, min, max)."""
    pd = require("pandas", "plot")
    summary = change_summary(frame, by="role", detector=detector)
    rows = []
    for config, runs in groups.items():
        part = summary[summary["run"].isin(runs)]
        for role, cell in part.groupby("role"):
            firsts = {r: s for r, s in zip(cell["run"], cell["first_change"])}
            steps = np.array([s for s in firsts.values() if s == s and s is not None], dtype=float)
            rows.append({"configuration": config, "role": role, "seeds": len(runs), "with_change": len(steps),
                         "first_changes": ", ".join(f"{configuration(r)[1]}: {'-' if s != s or s is None else int(s)}"
                                                    for r, s in sorted(firsts.items())),
                         "mean_step": float(steps.mean()) if len(steps) else np.nan,
                         "std_step": float(steps.std(ddof=1)) if len(steps) > 1 else np.nan,
                         "min_step": float(steps.min()) if len(steps) else np.nan,
                         "max_step": float(steps.max()) if len(steps) else np.nan})
    return pd.DataFrame(rows, columns=["configuration", "role", "seeds", "with_change", "first_changes", "mean_step",
                                       "std_step", "min_step", "max_step"])
