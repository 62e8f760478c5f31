"""Experiment 2: best practices raise neural persistence (Rieck et al. 2019, Section 5.2).

A [650, 650] ReLU MLP on MNIST and Fashion-MNIST (Adam 3e-4, batch 32), unmodified, with batch normalization and
with dropout 0.5. Expected ordering of mean normalized NP, mirroring test accuracy: dropout (about 0.62-0.64) >
batch norm (about 0.54-0.58) > unmodified (about 0.50-0.52). The authors' released code calls batch normalization
without the training flag (always inference mode); both that variant (``batchnorm-inference``) and the correct
one (``batchnorm``) are run. Writes ``results.csv`` (after every run; started again, it trains only the runs that
are missing) and ``np_by_variant.png``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pandas as pd
import torch

from .common import parse, profile, run_all
from .data import Dataset, load
from .training import Profile, mlp, train_with_checks

QUICK, PAPER = Profile(epochs=1, runs=1, train_fraction=0.05), Profile(epochs=40, runs=50)
VARIANTS = {"unmodified": {}, "batchnorm": {"batchnorm": "train"},
            "batchnorm-inference": {"batchnorm": "inference"}, "dropout": {"dropout": 0.5}}
DATASETS = ("mnist", "fashion-mnist")
INIT_SEED = 1_000_003  # initial weights of run r from seed INIT_SEED + r; its training from seed r


def train_one(name: str, variant: str, run: int, epochs: int, train_fraction: float, data_dir: Path | None) -> dict:
    """One run. Its initial weights and the order of its batches depend only on its index: trained alone (a resumed
    suite), after others or beside them (``--jobs``), a run gives the same result on the same number of threads."""
    data = _dataset(name, train_fraction, data_dir)
    torch.manual_seed(INIT_SEED + run)  # not the training seed: dropout's masks would reuse the initial weights' draws
    model = mlp(784, [650, 650], 10, **VARIANTS[variant])  # type: ignore[arg-type]
    curve = train_with_checks(model, data, epochs=epochs, lr=3e-4, checks_per_epoch=1, seed=run)
    last = curve.iloc[-1]
    return {"dataset": name, "variant": variant, "run": run,
            "mean_normalized_np": float(last["mean_normalized_np"]), "test_acc": float(last["test_acc"])}


@functools.lru_cache(maxsize=None)
def _dataset(name: str, train_fraction: float, data_dir: Path | None) -> Dataset:
    data = load(name, data_dir)
    return data.subset(train_fraction) if train_fraction < 1 else data


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse(__doc__ or "", "exp2", argv)
    p = profile(args, QUICK, PAPER)
    path = args.out / "results.csv"
    rows = pd.read_csv(path).to_dict("records") if path.exists() else []
    done = {(row["dataset"], row["variant"], row["run"]) for row in rows}
    # Run by run, so that a stopped suite leaves every variant with as many runs (give or take those in flight).
    todo = [(name, variant, r, p.epochs, p.train_fraction, args.data_dir)
            for r in range(p.runs) for name in DATASETS for variant in VARIANTS if (name, variant, r) not in done]
    for row in run_all(train_one, todo, args.jobs):
        rows.append(row)
        print(row, flush=True)
        pd.DataFrame(rows).to_csv(path, index=False)  # after every run: a stopped suite resumes from here
    frame = pd.DataFrame(rows)
    import matplotlib.pyplot as plt

    summary = frame.groupby(["dataset", "variant"])[["mean_normalized_np", "test_acc"]].agg(["mean", "std", "count"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, (name, part) in zip(axes, summary.groupby(level="dataset")):
        np_stats = part["mean_normalized_np"]
        ax.bar(part.index.get_level_values("variant"), np_stats["mean"], yerr=np_stats["std"].fillna(0), capsize=4,
               color=["C0", "C1", "C2", "C3"][: len(part)])
        ax.set_title(f"{name} ({int(np_stats['count'].min())} runs; bars: mean ± std)")
        ax.set_ylabel("mean normalized NP")
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "np_by_variant.png", dpi=110)
    print(summary)
    return frame


if __name__ == "__main__":
    main(sys.argv[1:])
