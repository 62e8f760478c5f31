"""Command-line plumbing shared by the experiments: ``--profile quick|paper``, ``--data-dir``, ``--out``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Sequence
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
    parser.add_argument("--jobs", type=int, default=1,
                        help="train this many runs at once, each in its own process on one thread (exp2)")
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


def run_all(train: Callable[..., Any], tasks: Sequence[tuple], jobs: int) -> Iterator[Any]:
    """``train(*task)`` for every task, results as they finish: in this process when ``jobs`` is 1, else in
    ``jobs`` processes of one thread each. A network this small trains only 1.7x faster on two threads than on
    one, so two processes on two cores train more runs an hour. ``train`` must be a module-level function."""
    if jobs <= 1:
        for task in tasks:
            yield train(*task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # a fresh interpreter, not a copy of this one's torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=one_thread) as pool:
        for future in as_completed([pool.submit(train, *task) for task in tasks]):
            yield future.result()


def one_thread() -> None:
    """Train on one thread (each process of ``run_all``)."""
    import torch

    torch.set_num_threads(1)
