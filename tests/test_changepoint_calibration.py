"""The change-point model against simulated series with known truth (the calibration in its docstring)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import changepoint_calibration as calibration  # noqa: E402

from neural_persistence.analysis.changepoints import PeltDetector, TrendChangeDetector  # noqa: E402


def test_the_quick_calibration_meets_the_targets_at_154_checkpoints() -> None:
    """Pythia's 154 revisions: at most 5 % of smooth trends get a change point, a 4 sigma change is found within
    3 checkpoints in at least 85 % of series, and at least 80 % of reported points are true (the worst of three
    checkpoint spacings; 60 series a cell, so the margins are the sampling error's)."""
    cells = calibration.calibrate(trials=60, sizes=(154,), seed=7)
    alarms = next(c for c in cells if c.precision is None)
    assert alarms.rate <= 0.05 + 0.03, alarms
    for cell in cells:
        if cell.precision is not None and "after 3" not in cell.case:
            assert cell.rate >= 0.85 - 0.05 and cell.precision >= 0.80, cell


def test_the_old_change_in_mean_model_fails_where_the_new_one_holds() -> None:
    """The reason for the model: PELT with a change-in-mean cost cuts smooth trends into steps."""
    rng = np.random.default_rng(0)
    old = new = 0
    for i in range(30):
        x = calibration.spacing("even", 80, rng)
        y = calibration.trend(("saturating", "log", "linear")[i % 3], x, rng) + rng.normal(size=80)
        old += bool(PeltDetector()(x.astype(np.int64), y))
        new += bool(TrendChangeDetector()(x.astype(np.int64), y))
    assert old >= 20 and new <= 2


def test_the_calibration_table_is_the_one_in_the_docstring_and_the_readme() -> None:
    """The published numbers are those the full profile wrote (experiments/results/CHANGEPOINTS.md)."""
    import neural_persistence.analysis.changepoints as module

    written = (Path(calibration.__file__).parent / "results" / "CHANGEPOINTS.md").read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for line in written.splitlines():
        if line.startswith("| smooth trend") or line.startswith("| 4 sigma level shift on a linear"):
            numbers = [part.strip() for part in line.split("|")[2:-1]]
            assert all(n in module.__doc__ for n in numbers), line
            assert line in readme, line
