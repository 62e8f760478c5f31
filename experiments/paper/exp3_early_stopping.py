"""Experiment 3: early stopping on NP against validation-loss stopping (Rieck et al. 2019, Section 5.3).

Each (data set, architecture) is trained once per run with checks every quarter epoch, recording mean normalized
NP, validation loss and test accuracy; every (patience g, burn-in b) configuration of both rules is then evaluated
on the recorded curves (the paper used 25 x 25 = 625 configurations). Summary per data set, as in the paper: the
barycentre of (stop-epoch difference, test-accuracy difference), NP minus validation, over configurations where
both triggered, and how often each triggered. Paper: Fashion-MNIST (-0.53, -0.08), MNIST (+0.17, -0.06),
IMDB (-1.68, +0.07). Writes ``curves.csv``, ``grid.csv``, ``summary.csv`` and ``barycentres.png``.
"""

from __future__ import annotations

import sys

import pandas as pd

from .common import parse, profile
from .data import load
from .training import Profile, barycentre, evaluate_grid, mlp, train_with_checks

QUICK = Profile(epochs=2, runs=1, train_fraction=0.05)
PAPER = Profile(epochs=40, runs=5)
ARCHITECTURES = {"fashion-mnist": [[50, 50, 20], [300, 100], [20, 20, 20]],
                 "mnist": [[50, 50, 20], [300, 100], [20, 20, 20]],
                 "imdb": [[128, 64, 16]]}
PAPER_GRID = (list(range(1, 26)), list(range(0, 25)))
QUICK_GRID = ([1, 2, 3], [0, 1])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse(__doc__ or "", "exp3", argv)
    p = profile(args, QUICK, PAPER)
    patiences, burn_ins = QUICK_GRID if args.profile == "quick" else PAPER_GRID
    curves = []
    for name, architectures in ARCHITECTURES.items():
        data = load(name, args.data_dir)
        data = data.subset(p.train_fraction) if p.train_fraction < 1 else data
        for arch in architectures:
            for r in range(p.runs):
                model = mlp(data.x_train.shape[1], arch, data.n_classes)
                curve = train_with_checks(model, data, epochs=p.epochs, lr=3e-4, checks_per_epoch=4, seed=r)
                curves.append(curve.assign(dataset=name, arch=str(arch), run=f"{name}/{arch}/{r}"))
                print(f"{name} {arch} run {r}: final test acc {curve['test_acc'].iloc[-1]:.3f}", flush=True)
    curves_frame = pd.concat(curves, ignore_index=True)
    curves_frame.to_csv(args.out / "curves.csv", index=False)
    grid = evaluate_grid(curves_frame, patiences, burn_ins)
    grid["dataset"] = grid["run"].str.split("/").str[0]
    grid.to_csv(args.out / "grid.csv", index=False)
    summary = pd.DataFrame([{"dataset": d, **barycentre(g)} for d, g in grid.groupby("dataset")])
    summary.to_csv(args.out / "summary.csv", index=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for i, row in summary.iterrows():
        ax.scatter(row["epoch_diff"], row["acc_diff"], s=60, color=f"C{i}", label=row["dataset"])
    ax.axhline(0, color="0.7", lw=1)
    ax.axvline(0, color="0.7", lw=1)
    ax.set_xlabel("stop epoch, NP minus validation")
    ax.set_ylabel("test accuracy, NP minus validation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "barycentres.png", dpi=110)
    print(summary)
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
