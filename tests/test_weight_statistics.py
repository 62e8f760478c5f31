"""The baseline statistics beside NP, against numpy and scipy written out plainly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from neural_persistence.core import baselines
from neural_persistence.core.baselines import weight_statistics
from neural_persistence.core.weights import to_keys


def _oracle(w: np.ndarray) -> dict[str, float]:
    w = w.astype(np.float64).ravel()
    a = np.abs(w)
    return {"rms": float(np.sqrt(np.mean(w**2))), "outlier_ratio": float(a.max() / np.sqrt(np.mean(w**2))),
            "excess_kurtosis": float(stats.kurtosis(w, fisher=True, bias=True)),
            "spread": float(np.var(a / a.max())), "frobenius": float(np.linalg.norm(w))}


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "int8"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_statistics_match_numpy_for_every_dtype_and_order(dtype: str, order: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(baselines, "BLOCKS", 5)  # blocks of uneven rows
    rng = np.random.default_rng(0)
    w = rng.standard_t(4, size=(37, 23)) + 0.1
    if dtype == "bfloat16":
        tensor = torch.tensor(w, dtype=torch.bfloat16)
        exact, given = tensor.float().numpy(), tensor
    elif dtype == "int8":
        exact = np.clip(np.round(w * 20), -127, 127).astype(np.int8)
        given = exact
    else:
        exact = w.astype(dtype)
        given = exact
    if order == "F" and not isinstance(given, torch.Tensor):
        given = np.asfortranarray(given)
    got = weight_statistics(to_keys(given)).as_dict()
    for name, value in _oracle(np.asarray(exact)).items():
        assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_a_constant_layer_has_no_kurtosis_and_a_zero_layer_no_ratio() -> None:
    assert np.isnan(weight_statistics(to_keys(np.full((3, 4), 0.5))).excess_kurtosis)
    zero = weight_statistics(to_keys(np.zeros((3, 4))))
    assert zero.rms == 0 and np.isnan(zero.outlier_ratio) and np.isnan(zero.spread)


def test_moments_about_a_far_mean_do_not_cancel() -> None:
    """Weights far from zero (a mean 1000 standard deviations away): raw moments would lose every digit of the
    kurtosis; sums about a rough mean keep them."""
    rng = np.random.default_rng(1)
    w = 1000.0 + rng.standard_t(5, size=(300, 200))
    got = weight_statistics(to_keys(w)).as_dict()
    for name, value in _oracle(w).items():
        assert got[name] == pytest.approx(value, rel=1e-8), name
