"""Calibration of the change-point model by simulation with known truth.

Series of ``n`` checkpoints with noise sigma = 1 on three spacings of checkpoints (``even``; ``pythia``: steps
0, 1, 2, 4, ..., 512 then even to 143000, as Pythia's revisions; ``random``: log-normal gaps), either a smooth
trend alone (how often is a change reported where there is none?) or a trend plus one change at a random
checkpoint between 10 % and 90 % of the run (is it found within 3 checkpoints, and how many of the reported
points are true?).

Trends: ``flat``; ``linear`` (up to 30 sigma over the run); ``saturating`` (a (1 - exp(-t / tau)), amplitude 5 to
30 sigma, tau from max(0.1 run, 5 checkpoints) to half the run, on the step axis); ``saturating-index`` (the same
on the checkpoint index); ``log`` (a log(1 + t / s), s from 5 to 20 mean gaps). Changes: a level shift of
``size`` sigma, or a slope change that departs from the continued trend by ``size`` sigma after ``over`` mean
checkpoint gaps.

Run: ``python experiments/changepoint_calibration.py [--profile quick|full]``; the full profile (400 series a
cell) writes ``experiments/results/CHANGEPOINTS.md``, the table quoted in
``neural_persistence.analysis.changepoints`` and the README.
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neural_persistence.analysis.changepoints import Detector, TrendChangeDetector

SPACINGS = ("even", "pythia", "random")
TRENDS = ("flat", "linear", "saturating", "saturating-index", "log")
TOLERANCE = 3  # checkpoints between a reported and a true change for it to count as found


@dataclass(frozen=True)
class Change:
    """A change put into simulated series: ``kind`` level or slope, ``size`` in sigma, ``over`` checkpoints."""

    kind: str
    size: float
    over: int = 1
    trend: str = "linear"

    @property
    def label(self) -> str:
        if self.kind == "level":
            return f"{self.size:g} sigma level shift on a {self.trend} trend"
        return f"{self.size:g} sigma slope change (off the trend by {self.size:g} sigma after {self.over} ckpt) on a {self.trend} trend"


@dataclass(frozen=True)
class Cell:
    """One row x column of the table: the worst spacing's rate (and its precision for changes)."""

    case: str
    n: int
    rate: float
    precision: float | None
    spacing: str


def spacing(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "even":
        return np.arange(n) * 100.0
    if kind == "pythia":
        early = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
        return np.array(early + list(np.linspace(1000, 143000, n - len(early))))
    return np.concatenate([[0.0], np.cumsum(rng.lognormal(0, 0.8, n - 1))]) * 100


def trend(kind: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = len(x)
    t = (x - x[0]) / (x[-1] - x[0])
    sign = rng.choice([-1.0, 1.0])
    if kind == "flat":
        return np.zeros(n)
    if kind == "linear":
        return rng.uniform(-30, 30) * t
    if kind in ("saturating", "saturating-index"):
        axis = t if kind == "saturating" else np.arange(n) / (n - 1)
        tau = rng.uniform(max(0.1, 5 / n), 0.5)
        return sign * rng.uniform(5, 30) * (1 - np.exp(-axis / tau))
    if kind == "log":
        z = np.log1p((x - x[0]) / (rng.uniform(5, 20) * np.mean(np.diff(x))))
        return sign * rng.uniform(5, 30) * z / z[-1]
    raise ValueError(kind)


def false_alarms(detector: Detector, n: int, trials: int, rng: np.random.Generator) -> Cell:
    """Share of smooth-trend series (all trends pooled) that get any change point, at the worst spacing."""
    worst: tuple[float, str] = (-1.0, "")
    for kind in SPACINGS:
        hits = 0
        for i in range(trials):
            x = spacing(kind, n, rng)
            y = trend(TRENDS[i % len(TRENDS)], x, rng) + rng.normal(size=n)
            hits += bool(detector(x.astype(np.int64), y))
        worst = max(worst, (hits / trials, kind))
    return Cell("smooth trend: share with any change point", n, worst[0], None, worst[1])


def detection(detector: Detector, change: Change, n: int, trials: int, rng: np.random.Generator) -> Cell:
    """Share of series whose change is found within TOLERANCE checkpoints, and the precision, worst spacing."""
    worst: tuple[float, float, str] = (2.0, 2.0, "")
    for kind in SPACINGS:
        found = reported = true = 0
        for _ in range(trials):
            x = spacing(kind, n, rng)
            y = trend(change.trend, x, rng) + rng.normal(size=n)
            edge = max(3, int(0.1 * n))
            at = int(rng.integers(edge, n - edge))
            sign = rng.choice([-1.0, 1.0])
            if change.kind == "level":
                y[at:] += sign * change.size
            else:
                gap = np.mean(np.diff(x)) * change.over
                y += sign * change.size * np.clip(x - x[at], 0, None) / gap
            points = [c.index for c in detector(x.astype(np.int64), y)]
            close = [abs(p - at) <= TOLERANCE for p in points]
            found += any(close)
            reported += len(points)
            true += sum(close)
        cell = (found / trials, true / reported if reported else 1.0, kind)
        worst = min(worst, cell)
    return Cell(change.label, n, worst[0], worst[1], worst[2])


CHANGES = [Change("level", 4), Change("level", 4, trend="saturating"), Change("slope", 4, 1),
           Change("slope", 4, 1, trend="saturating"), Change("slope", 4, 3), Change("level", 8)]


def calibrate(trials: int, sizes: tuple[int, ...], seed: int = 0,
              detector: Detector | None = None) -> list[Cell]:
    detector = detector or TrendChangeDetector()
    rng = np.random.default_rng(seed)
    cells = [false_alarms(detector, n, trials, rng) for n in sizes]
    for change, n in itertools.product(CHANGES, sizes):
        cells.append(detection(detector, change, n, trials, rng))
    return cells


def table(cells: list[Cell]) -> str:
    sizes = sorted({c.n for c in cells})
    rows = list(dict.fromkeys(c.case for c in cells))
    lines = ["| series with ... (worst of three spacings) | " + " | ".join(f"n = {n}" for n in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for case in rows:
        values = []
        for n in sizes:
            cell = next(c for c in cells if c.case == case and c.n == n)
            values.append(f"{cell.rate:.2f}" + (f" / {cell.precision:.2f}" if cell.precision is not None else ""))
        lines.append(f"| {case} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=("quick", "full"), default="full")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    trials, sizes = (40, (40, 154)) if args.profile == "quick" else (400, (20, 40, 80, 154))
    start = time.perf_counter()
    cells = calibrate(trials, sizes)
    seconds = time.perf_counter() - start
    text = (f"# Change-point calibration\n\n{trials} simulated series a cell and spacing, noise sigma = 1 "
            f"({seconds:.0f} s). Smooth trends: the share of series given any change point. Changes: the share "
            f"found within {TOLERANCE} checkpoints / the share of reported points that are true. Detector: "
            f"`{TrendChangeDetector()}`.\n\n{table(cells)}\n")
    print(text)
    if args.profile == "full":
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "CHANGEPOINTS.md").write_text(text)


if __name__ == "__main__":
    main()
