"""scikit-learn's bundled digits (8x8 images, 1,797 samples) as torch tensors: a real data set, no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)


def digits_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
