"""Command-line plumbing shared by the experiments: ``--profile quick|paper``, ``--data-dir``, ``--out``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

RESULTS = Path(__file__).parent / "results"


def parse(doc: str, name: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["quick", "paper"], default="quick",
                        help="quick: minutes, for the tests; paper: the paper's settings (hours)")
    parser.add_argument("--data-dir", type=Path, default=None, help="your own copies of the data sets")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default results/{name}-<profile>)")
    parser.add_argument("--runs", type=int, default=None, help="override the profile's number of runs")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's number of epochs")
    args = parser.parse_args(argv)
    args.out = args.out or RESULTS / f"{name}-{args.profile}"
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def profile(args: argparse.Namespace, quick: Any, paper: Any) -> Any:
    from dataclasses import replace

    chosen = quick if args.profile == "quick" else paper
    if args.runs is not None:
        chosen = replace(chosen, runs=args.runs)
    if args.epochs is not None:
        chosen = replace(chosen, epochs=args.epochs)
    return chosen
