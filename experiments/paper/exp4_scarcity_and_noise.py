"""Experiment 4: data scarcity and noisy labels (Rieck et al. 2019, Section 5.3).

A [50, 50, 20] MLP on Fashion-MNIST trained on 10%, 25%, 50% and all of the training data, and with a fraction of
the training labels shuffled. For each, where the NP rule and the validation-loss rule stop (patience g, burn-in b
fixed) and the test accuracy there. Expected: NP trains longer with less data; with noisy labels NP stays stable
while validation loss degrades. Writes ``curves.csv``, ``stops.csv`` and ``curves.png``.
"""

from __future__ import annotations

import sys

import pandas as pd

import neural_persistence as npers

from .common import parse, profile
from .data import load
from .training import Profile, mlp, train_with_checks, val_loss_stop

QUICK = Profile(epochs=2, runs=1, train_fraction=0.1)
PAPER = Profile(epochs=40, runs=5)
PATIENCE, BURN_IN = 4, 2


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse(__doc__ or "", "exp4", argv)
    p = profile(args, QUICK, PAPER)
    full = load("fashion-mnist", args.data_dir)
    scale = p.train_fraction  # quick runs shrink every setting by the same factor
    settings = [("data", f, full.subset(f * scale, seed=1)) for f in (0.1, 0.25, 0.5, 1.0)]
    base = full.subset(scale, seed=1) if scale < 1 else full
    settings += [("noise", f, base.with_noisy_labels(f, seed=2)) for f in (0.2, 0.5)]
    curves, stops = [], []
    for kind, fraction, data in settings:
        for r in range(p.runs):
            curve = train_with_checks(mlp(784, [50, 50, 20], 10), data, epochs=p.epochs, lr=3e-4, seed=r)
            curves.append(curve.assign(kind=kind, fraction=fraction, run=r))
            stop_np = npers.first_stop(curve["mean_normalized_np"], patience=PATIENCE, burn_in=BURN_IN)
            stop_val = val_loss_stop(curve["val_loss"], PATIENCE, BURN_IN)
            stops.append({"kind": kind, "fraction": fraction, "run": r,
                          "np_epoch": None if stop_np is None else curve["epoch"][stop_np],
                          "np_acc": None if stop_np is None else curve["test_acc"][stop_np],
                          "val_epoch": None if stop_val is None else curve["epoch"][stop_val],
                          "val_acc": None if stop_val is None else curve["test_acc"][stop_val],
                          "final_acc": curve["test_acc"].iloc[-1]})
            print(stops[-1], flush=True)
    curves_frame, stops_frame = pd.concat(curves, ignore_index=True), pd.DataFrame(stops)
    curves_frame.to_csv(args.out / "curves.csv", index=False)
    stops_frame.to_csv(args.out / "stops.csv", index=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for (kind, fraction), part in curves_frame[curves_frame["run"] == 0].groupby(["kind", "fraction"]):
        label = f"{kind} {fraction:g}"
        axes[0].plot(part["epoch"], part["mean_normalized_np"], label=label)
        axes[1].plot(part["epoch"], part["val_loss"], label=label)
    axes[0].set_ylabel("mean normalized NP")
    axes[1].set_ylabel("validation loss")
    for ax in axes:
        ax.set_xlabel("epoch")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=110)
    return stops_frame


if __name__ == "__main__":
    main(sys.argv[1:])
