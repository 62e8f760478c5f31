"""Simple statistics of a layer's weights, to set beside NP: does NP say more than the weights' spread?

Girrbach et al. (TMLR 2023) found per-layer NP to follow the variance of |w| / max|w|; these are that statistic
and its neighbours, from one pass over the weights (read in blocks of rows, in float64):

``rms``              sqrt(mean(w^2))
``outlier_ratio``    max|w| / rms
``excess_kurtosis``  E[(w - mean)^4] / Var(w)^2 - 3 (0 for a Gaussian; NaN for a constant layer)
``spread``           Var(|w| / max|w|), the statistic NP tracks
``frobenius``        sqrt(sum(w^2))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .weights import Keys

__all__ = ["WeightStatistics", "weight_statistics"]

#: Weights converted to float64 at a time.
BLOCK = 1 << 20


@dataclass(frozen=True)
class WeightStatistics:
    """The statistics of one layer (see the module docstring)."""

    rms: float
    outlier_ratio: float
    excess_kurtosis: float
    spread: float
    frobenius: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _signed(keys: Keys, rows: slice) -> np.ndarray:
    """The layer's weights (signed) of some rows, as float64."""
    part = keys.data[rows]
    if keys.float_dtype is None:
        return part.astype(np.float64)
    if keys.float_dtype == "bfloat16":
        return (part.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return part.view(np.dtype(keys.float_dtype)).astype(np.float64)


def weight_statistics(keys: Keys) -> WeightStatistics:
    """:class:`WeightStatistics` of a layer given as keys (:func:`~neural_persistence.core.weights.to_keys`)."""
    n, m = keys.data.shape
    count = n * m
    step = max(1, BLOCK // max(m, 1))
    sums = np.zeros(5)  # sum of w, w^2, w^3, w^4, |w|
    largest = 0.0
    for start in range(0, n, step):
        w = _signed(keys, slice(start, start + step))
        a = np.abs(w)
        w2 = w * w
        sums += (w.sum(), w2.sum(), (w2 * w).sum(), (w2 * w2).sum(), a.sum())
        largest = max(largest, float(a.max()) if a.size else 0.0)
    s1, s2, s3, s4, s_abs = sums / count
    variance = s2 - s1 * s1
    central4 = s4 - 4 * s1 * s3 + 6 * s1 * s1 * s2 - 3 * s1**4
    rms = math.sqrt(s2)
    return WeightStatistics(
        rms=rms,
        outlier_ratio=largest / rms if rms > 0 else math.nan,
        excess_kurtosis=central4 / variance**2 - 3.0 if variance > 1e-300 else math.nan,
        spread=(s2 - s_abs * s_abs) / largest**2 if largest > 0 else math.nan,
        frobenius=math.sqrt(sums[1]),
    )
