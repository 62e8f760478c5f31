"""Experiment 2, checked the way Girrbach et al. (TMLR 2023) question it: is NP the weights' arrangement, or only
their distribution?

Their claim: NP of a layer barely changes when its weights are shuffled (same values, no arrangement), and follows
the variance of |w| / max|w|. Here, for the [650, 650] ReLU MLPs of experiment 2 (unmodified, batch norm, dropout
0.5; MNIST and Fashion-MNIST; Adam 3e-4, batch 32), trained and at initialization, every linear layer's
normalized NP (each layer by its own max |w|, weights only) is set beside

* its null model: the mean and standard deviation of NP over ``samples`` uniform shuffles of its entries
  (:mod:`neural_persistence.core.null`), the z-score ``structural`` = (NP - null) / null std and the relative gap;
* the spread Var(|w| / max|w|), over the layers of all networks (Pearson r with NP and with the null);

and each network's deep graph persistence (DGP) beside that of the same network with every layer shuffled.
Writes ``layers.csv`` and ``networks.csv`` (after every run: started again, it trains only the runs that are
missing), and ``np_vs_null.png``.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import neural_persistence as npers
from neural_persistence.core.measures import diagram_from_tree, normalized_np
from neural_persistence.core.null import null_tree_values
from neural_persistence.core.weights import to_keys

from .common import parse, profile
from .data import Dataset, load
from .training import Profile, mlp, train_with_checks

QUICK, PAPER = Profile(epochs=1, runs=1, train_fraction=0.05), Profile(epochs=10, runs=3)
SAMPLES = {"quick": 8, "paper": 64}
VARIANTS = {"unmodified": {}, "batchnorm": {"batchnorm": "train"}, "dropout": {"dropout": 0.5}}
DATASETS = ("mnist", "fashion-mnist")
INIT_SEED = 1_000_003  # as experiment 2: initial weights of run r from seed INIT_SEED + r


def _np(values: np.ndarray, scale: float, shape: tuple[int, int]) -> float:
    value = diagram_from_tree(values, scale).norm(2.0)
    return float(normalized_np(value, shape, 2.0))


def layer_rows(weights: list[np.ndarray], samples: int, seed: int) -> list[dict]:
    """NP, null and spread of each layer."""
    rows = []
    for index, w in enumerate(weights):
        shape = (int(w.shape[0]), int(w.shape[1]))
        scale = float(np.abs(w).max())
        value = _np(npers.layer_tree(w).values, scale, shape)
        null = np.array([_np(t, scale, shape) for t in null_tree_values(to_keys(w), samples, seed)])
        a = np.abs(w) / scale
        rows.append({"layer": index, "rows": shape[0], "cols": shape[1], "normalized_np": value,
                     "null_mean": float(null.mean()), "null_std": float(null.std(ddof=1)),
                     "structural": float((value - null.mean()) / null.std(ddof=1)),
                     "relative_gap": float((value - null.mean()) / value), "spread": float(a.var())})
    return rows


def network_row(weights: list[np.ndarray], samples: int, seed: int) -> dict:
    """DGP of the network and of copies with every layer shuffled."""
    rng = np.random.default_rng(seed)
    dgp = npers.deep_graph_persistence(weights).normalized_np
    shuffled = [npers.deep_graph_persistence([rng.permutation(w.ravel()).reshape(w.shape) for w in weights])
                .normalized_np for _ in range(max(2, samples // 8))]
    return {"dgp": float(dgp), "dgp_shuffled_mean": float(np.mean(shuffled)),
            "dgp_shuffled_std": float(np.std(shuffled, ddof=1))}


@functools.lru_cache(maxsize=None)
def _dataset(name: str, train_fraction: float, data_dir: Path | None) -> Dataset:
    data = load(name, data_dir)
    return data.subset(train_fraction) if train_fraction < 1 else data


def run_one(name: str, variant: str, run: int, p: Profile, samples: int, data_dir: Path | None) -> tuple[list, dict]:
    torch.manual_seed(INIT_SEED + run)
    model = mlp(784, [650, 650], 10, **VARIANTS[variant])  # type: ignore[arg-type]
    key = {"dataset": name, "variant": variant, "run": run}
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    initial = [m.weight.detach().double().numpy().copy() for m in linears]
    curve = train_with_checks(model, _dataset(name, p.train_fraction, data_dir), epochs=p.epochs, lr=3e-4,
                              checks_per_epoch=1, seed=run)
    trained = [m.weight.detach().double().numpy() for m in linears]
    layers, networks = [], []
    for state, weights in (("initial", initial), ("trained", trained)):
        layers += [{**key, "state": state, **r} for r in layer_rows(weights, samples, seed=run)]
        networks.append({**key, "state": state, **network_row(weights, samples, seed=run),
                         "test_acc": float(curve.iloc[-1]["test_acc"]) if state == "trained" else np.nan})
    return layers, networks


def summary(layers: pd.DataFrame, networks: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, state and layer: mean NP, null, z-score and gap over runs and variants."""
    return (layers.groupby(["dataset", "state", "layer"])[["normalized_np", "null_mean", "null_std", "structural",
                                                           "relative_gap", "spread"]].mean().reset_index())


def correlations(layers: pd.DataFrame) -> pd.DataFrame:
    """Over the trained layers of each layer position (all datasets, variants, runs): Pearson r of NP with the
    spread and with the null mean."""
    rows = []
    for (state, layer), part in layers.groupby(["state", "layer"]):
        if len(part) > 2 and part["normalized_np"].std() > 0 and part["spread"].std() > 0:  # initial nets: all alike
            rows.append({"state": state, "layer": layer, "networks": len(part),
                         "r_np_spread": float(np.corrcoef(part["normalized_np"], part["spread"])[0, 1]),
                         "r_np_null": float(np.corrcoef(part["normalized_np"], part["null_mean"])[0, 1])})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    args = parse(__doc__ or "", "exp2-permutation", argv)
    p = profile(args, QUICK, PAPER)
    samples = SAMPLES[args.profile]
    layers_path, networks_path = args.out / "layers.csv", args.out / "networks.csv"
    layers = pd.read_csv(layers_path).to_dict("records") if layers_path.exists() else []
    networks = pd.read_csv(networks_path).to_dict("records") if networks_path.exists() else []
    done = {(r["dataset"], r["variant"], r["run"]) for r in networks}
    for run in range(p.runs):
        for name in DATASETS:
            for variant in VARIANTS:
                if (name, variant, run) in done:
                    continue
                new_layers, new_networks = run_one(name, variant, run, p, samples, args.data_dir)
                layers += new_layers
                networks += new_networks
                pd.DataFrame(layers).to_csv(layers_path, index=False)  # after every run: a stopped suite resumes
                pd.DataFrame(networks).to_csv(networks_path, index=False)
                print(name, variant, run, flush=True)
    layer_frame, network_frame = pd.DataFrame(layers), pd.DataFrame(networks)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, state in zip(axes, ("initial", "trained")):
        part = layer_frame[layer_frame["state"] == state]
        for layer, group in part.groupby("layer"):
            ax.errorbar(group["null_mean"], group["normalized_np"], xerr=group["null_std"], fmt="o", ms=4,
                        label=f"layer {layer}")
        lo = min(part["null_mean"].min(), part["normalized_np"].min())
        hi = max(part["null_mean"].max(), part["normalized_np"].max())
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="NP = null")
        ax.set_xlabel("NP of the layer shuffled (mean ± std)")
        ax.set_ylabel("NP of the layer")
        ax.set_title(f"{state} networks")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "np_vs_null.png", dpi=110)
    print(summary(layer_frame, network_frame).to_string(index=False))
    print(correlations(layer_frame).to_string(index=False))
    print(network_frame.groupby(["dataset", "state"])[["dgp", "dgp_shuffled_mean", "dgp_shuffled_std"]].mean())
    return layer_frame, network_frame


if __name__ == "__main__":
    main(sys.argv[1:])
