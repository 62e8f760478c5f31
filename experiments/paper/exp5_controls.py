"""Experiment 5: the controls the paper names (Rieck et al. 2019, Sections 5.1 and 5.3).

Two simpler measures used in place of NP: the (Onnela) weighted clustering coefficient of a layer's graph, and the
plain p-norm of all weights (p = 2, divided by the number of weights so that layers compare). Expected: they fail
to separate trained from random networks, or never trigger early stopping. The clustering coefficient of a
bipartite graph is identically zero (a bipartite graph has no triangles), which this experiment shows numerically.
Writes ``separation.csv`` and ``stopping.csv``.
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from torch import nn

import neural_persistence as npers

from .common import parse, profile
from .data import load
from .training import Profile, barycentre, evaluate_grid, mlp, train_with_checks

QUICK, PAPER = Profile(epochs=1, runs=2, train_fraction=0.1), Profile(epochs=10, runs=20)


def clustering_coefficient(w: np.ndarray) -> float:
    """Mean Onnela weighted clustering coefficient of the layer's bipartite graph (weights |w| / max |w|)."""
    a = np.abs(w) / np.abs(w).max()
    n, m = a.shape
    adj = np.zeros((n + m, n + m))
    adj[:n, n:], adj[n:, :n] = a, a.T
    cube = np.cbrt(adj)
    triangles = np.diag(cube @ cube @ cube)
    degree = (adj > 0).sum(1)
    denominator = degree * (degree - 1)
    return float(np.mean(np.divide(triangles, denominator, out=np.zeros_like(triangles), where=denominator > 0)))


def weight_norm(model: nn.Module) -> float:
    weights = [p.detach().numpy().ravel() for name, p in model.named_parameters() if name.endswith("weight")]
    flat = np.concatenate(weights)
    return float(np.linalg.norm(flat) / np.sqrt(len(flat)))


def controls(model: nn.Module) -> dict[str, float]:
    layers = [m.weight.detach().numpy() for m in model.modules() if isinstance(m, nn.Linear)]
    return {"clustering": float(np.mean([clustering_coefficient(w) for w in layers])), "weight_norm": weight_norm(model)}


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    args = parse(__doc__ or "", "exp5", argv)
    p = profile(args, QUICK, PAPER)
    mnist = load("mnist", args.data_dir)
    rows = []
    for r in range(p.runs):  # separation: trained perceptron vs a Gaussian matrix of the same scale
        model = nn.Sequential(nn.Linear(784, 10))
        train_with_checks(model, mnist, epochs=p.epochs, lr=0.5, optimizer="sgd", checks_per_epoch=1, seed=r)
        w = model[0].weight.detach().numpy()
        random = np.random.default_rng(r).normal(0, w.std(), w.shape)
        for kind, matrix in (("trained", w), ("gaussian", random)):
            rows.append({"run": r, "kind": kind, "normalized_np": npers.compute([matrix]).mean_normalized_np,
                         "clustering": clustering_coefficient(matrix),
                         "weight_norm": float(np.linalg.norm(matrix) / np.sqrt(matrix.size))})
    separation = pd.DataFrame(rows)
    separation.to_csv(args.out / "separation.csv", index=False)
    fashion = load("fashion-mnist", args.data_dir)
    fashion = fashion.subset(p.train_fraction) if p.train_fraction < 1 else fashion
    curves = pd.concat([train_with_checks(mlp(784, [50, 50, 20], 10), fashion, epochs=max(p.epochs, 2), lr=3e-4,
                                          seed=r, measure=controls).assign(run=f"fashion/{r}") for r in range(p.runs)])
    summaries = []
    for signal in ("mean_normalized_np", "clustering", "weight_norm"):
        grid = evaluate_grid(curves, [1, 2, 3, 5], [0, 2], signal=signal)
        summaries.append({"signal": signal, **barycentre(grid)})
    stopping = pd.DataFrame(summaries)
    stopping.to_csv(args.out / "stopping.csv", index=False)
    print(separation.groupby("kind")[["normalized_np", "clustering", "weight_norm"]].mean())
    print(stopping)
    return separation, stopping


if __name__ == "__main__":
    main(sys.argv[1:])
