"""Shared pieces of the reproduction: the paper's MLPs, training with checks, and stopping rules on recorded curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import neural_persistence as npers

from .data import Dataset

__all__ = ["InferenceBatchNorm", "Profile", "barycentre", "evaluate_grid", "mlp", "train_with_checks", "val_loss_stop"]


@dataclass(frozen=True)
class Profile:
    """How much of the paper's protocol to run."""

    epochs: int
    runs: int
    train_fraction: float = 1.0  # of the training set, for quick runs


class InferenceBatchNorm(nn.BatchNorm1d):
    """Batch normalization always in inference mode, as the authors' released code calls it (no training flag):
    it normalizes with the running statistics, which then never move from 0 and 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False,
                                        0.0, self.eps)


def mlp(n_in: int, hidden: list[int], n_out: int, batchnorm: str = "", dropout: float = 0.0) -> nn.Sequential:
    """ReLU MLP; ``batchnorm`` is ``""``, ``"train"`` (correct) or ``"inference"`` (the released code's)."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers.append(nn.Linear(width, h))
        if batchnorm == "train":
            layers.append(nn.BatchNorm1d(h))
        elif batchnorm == "inference":
            layers.append(InferenceBatchNorm(h))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    model.train()
    return acc


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(model(x), y).item()
    model.train()
    return loss


def train_with_checks(model: nn.Module, data: Dataset, *, epochs: int, lr: float, batch: int = 32,
                      optimizer: str = "adam", checks_per_epoch: int = 4, val_fraction: float = 0.1,
                      seed: int = 0, measure: Any = None) -> pd.DataFrame:
    """Train, and at every check (``checks_per_epoch`` per epoch, and before training) record mean normalized NP,
    validation loss (on a held-out part of the training set), test accuracy and, with ``measure``, more columns
    (``measure(model) -> dict``)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y_train))
    n_val = max(1, int(val_fraction * len(order)))
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    x_val, y_val, x_tr, y_tr = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    # fused: the same Adam, in one kernel per step (twice as fast here as the default per-tensor loop on CPU)
    opt = (torch.optim.Adam(model.parameters(), lr=lr, fused=True) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=lr))
    steps = math.ceil(len(x_tr) / batch)
    check_at = {round(steps * (k + 1) / checks_per_epoch) - 1 for k in range(checks_per_epoch)}
    records = []

    def check(epoch: float) -> None:
        row = {"epoch": epoch, "mean_normalized_np": npers.compute(model, bias=True).mean_normalized_np,
               "val_loss": _loss(model, x_val, y_val), "test_acc": _accuracy(model, x_test, y_test)}
        if measure is not None:
            row.update(measure(model))
        records.append(row)

    check(0.0)
    for epoch in range(epochs):
        perm = torch.from_numpy(rng.permutation(len(x_tr)))
        for step in range(steps):
            idx = perm[step * batch : (step + 1) * batch]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step in check_at:
                check(epoch + (step + 1) / steps)
    return pd.DataFrame(records)


def val_loss_stop(val_losses: Any, patience: int, burn_in: int = 0, min_delta: float = 0.0) -> int | None:
    """The usual rule: stop when the validation loss has not fallen by more than ``min_delta`` for ``patience``
    checks (Algorithm 2 on the negated loss)."""
    return npers.first_stop([-v for v in val_losses], patience=patience, burn_in=burn_in, min_delta=min_delta)


def evaluate_grid(curves: pd.DataFrame, patiences: list[int], burn_ins: list[int], min_delta: float = 0.0,
                  signal: str = "mean_normalized_np") -> pd.DataFrame:
    """Both stopping rules on every recorded run (``curves`` has a ``run`` column) for every (g, b).

    One row per (run, g, b): the check index and epoch where each rule stops (None if it never does), and the
    test accuracy there. The NP rule watches ``signal`` rising; the baseline watches the validation loss falling.
    """
    rows = []
    for run, curve in curves.groupby("run", sort=False):
        curve = curve.reset_index(drop=True)
        for g in patiences:
            for b in burn_ins:
                stop_np = npers.first_stop(curve[signal], patience=g, burn_in=b, min_delta=min_delta)
                stop_val = val_loss_stop(curve["val_loss"], g, b, min_delta)
                rows.append({
                    "run": run, "patience": g, "burn_in": b,
                    "np_check": stop_np, "val_check": stop_val,
                    "np_epoch": None if stop_np is None else curve["epoch"][stop_np],
                    "val_epoch": None if stop_val is None else curve["epoch"][stop_val],
                    "np_acc": None if stop_np is None else curve["test_acc"][stop_np],
                    "val_acc": None if stop_val is None else curve["test_acc"][stop_val],
                })
    return pd.DataFrame(rows)


def barycentre(grid: pd.DataFrame) -> dict[str, float]:
    """The paper's summary: mean (stop-epoch difference, test-accuracy difference) of NP minus validation over the
    configurations where both rules triggered, and how often each triggered."""
    both = grid.dropna(subset=["np_check", "val_check"])
    return {
        "epoch_diff": float((both["np_epoch"] - both["val_epoch"]).mean()) if len(both) else float("nan"),
        "acc_diff": float((both["np_acc"] - both["val_acc"]).mean()) if len(both) else float("nan"),
        "np_triggered": float(grid["np_check"].notna().mean()),
        "val_triggered": float(grid["val_check"].notna().mean()),
        "both": int(len(both)),
        "configurations": int(len(grid)),
    }
