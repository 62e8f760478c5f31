"""Experiment 1: trained vs random (Rieck et al. 2019, Section 5.1).

A perceptron 784 -> 10 trained on MNIST (SGD, lr 0.5, batch 32) against random matrices of the same shape and
scale (Gaussian and uniform, with the trained weights' standard deviation) and against a diverging network (the
same training with a learning rate far too high). Expected: trained above both random kinds; uniform below
Gaussian; diverging near Gaussian. Writes ``results.csv`` (run, kind, normalized_np) and ``np_by_kind.png``.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from torch import nn

import neural_persistence as npers

from .common import parse, profile
from .data import load
from .training import Profile, train_with_checks

QUICK, PAPER = Profile(epochs=1, runs=3), Profile(epochs=10, runs=100)
DIVERGING_LR = 1e4


def run(args) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    p = profile(args, QUICK, PAPER)
    data = load("mnist", args.data_dir)
    rows = []
    for r in range(p.runs):
        for kind, lr in (("trained", 0.5), ("diverging", DIVERGING_LR)):
            model = nn.Sequential(nn.Linear(784, 10))
            train_with_checks(model, data, epochs=p.epochs, lr=lr, optimizer="sgd", checks_per_epoch=1, seed=r)
            rows.append({"run": r, "kind": kind, "normalized_np": npers.compute(model, bias=True).mean_normalized_np})
            if kind == "trained":
                w = npers.with_bias(model[0].weight.detach().numpy(), model[0].bias.detach().numpy())
        rng = np.random.default_rng(1000 + r)
        half_width = np.sqrt(3) * w.std()  # a uniform with the same standard deviation
        for kind, random in (("gaussian", rng.normal(0, w.std(), w.shape)),
                             ("uniform", rng.uniform(-half_width, half_width, w.shape))):
            rows.append({"run": r, "kind": kind, "normalized_np": npers.compute([random]).mean_normalized_np})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse(__doc__ or "", "exp1", argv)
    frame = run(args)
    frame.to_csv(args.out / "results.csv", index=False)
    import matplotlib.pyplot as plt

    order = ["trained", "gaussian", "uniform", "diverging"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.boxplot([frame[frame["kind"] == k]["normalized_np"] for k in order], tick_labels=order)
    ax.set_ylabel("normalized NP")
    ax.set_title("perceptron on MNIST: trained vs random")
    fig.tight_layout()
    fig.savefig(args.out / "np_by_kind.png", dpi=110)
    print(frame.groupby("kind")["normalized_np"].agg(["mean", "std", "count"]))
    return frame


if __name__ == "__main__":
    main(sys.argv[1:])
