"""Simple statistics of a layer's weights, to set beside NP: does NP say more than the weights' spread?

Girrbach et al. (TMLR 2023) found per-layer NP to follow the variance of |w| / max|w|; these are that statistic
and its neighbours, from one pass over the weights (numba, blocks of rows in parallel, sums in float64 about a
rough mean, so that the central moments do not cancel):

``rms``              sqrt(mean(w^2))
``outlier_ratio``    max|w| / rms
``excess_kurtosis``  E[(w - mean)^4] / Var(w)^2 - 3 (0 for a Gaussian; NaN for a constant layer)
``spread``           Var(|w| / max|w|), the statistic NP tracks
``frobenius``        sqrt(sum(w^2))
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numba as nb
import numpy as np

from .kernels import abs_key
from .weights import Keys

__all__ = ["WeightStatistics", "weight_statistics"]

#: Rows are summed in this many blocks (in parallel), a number fixed so that the sums do not depend on the threads.
BLOCKS = 16
PIVOT_SAMPLE = 4096


@nb.njit(cache=True, nogil=True, fastmath=True)
def _row_sums(x, pivot, acc):  # type: ignore[no-untyped-def]
    """Add one row's sums of d, d^2, d^3, d^4 (d = w - pivot) and of |w| to ``acc``. (max |w| is taken on the
    integer keys: a float max with NaN rules does not vectorize, and costs more than all the sums.)"""
    s1 = s2 = s3 = s4 = sa = 0.0
    for j in range(x.shape[0]):
        w = np.float64(x[j])
        d = w - pivot
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
        sa += abs(w)
    acc[0] += s1
    acc[1] += s2
    acc[2] += s3
    acc[3] += s4
    acc[4] += sa


@nb.njit(cache=True, nogil=True)
def _row_max_key(keys, mask, top):  # type: ignore[no-untyped-def]
    for j in range(keys.shape[0]):
        top = max(top, abs_key(keys[j], mask))
    return top


@nb.njit(cache=True, nogil=True, parallel=True)
def _sums(values, keys, mask, pivot, out, top):  # type: ignore[no-untyped-def]
    """:func:`_row_sums` of the rows of ``values`` (floats or integers; ``keys`` is the same memory read as keys),
    in ``out.shape[0]`` blocks of rows; block ``b``'s largest key in ``top[b]``."""
    n = values.shape[0]
    blocks = out.shape[0]
    for b in nb.prange(blocks):
        best = top[b]
        for i in range(b * n // blocks, (b + 1) * n // blocks):
            _row_sums(values[i], pivot, out[b])
            best = _row_max_key(keys[i], mask, best)
        top[b] = best


@nb.njit(cache=True, nogil=True, parallel=True)
def _sums_bfloat16(keys, mask, pivot, out, top):  # type: ignore[no-untyped-def]
    """:func:`_sums` of bfloat16 bits: each row widened to float32 bits in a buffer of its own block."""
    n, m = keys.shape
    blocks = out.shape[0]
    for b in nb.prange(blocks):
        wide = np.empty(m, np.uint32)
        as_float = wide.view(np.float32)
        best = top[b]
        for i in range(b * n // blocks, (b + 1) * n // blocks):
            for j in range(m):
                wide[j] = np.uint32(keys[i, j]) << np.uint32(16)
            _row_sums(as_float, pivot, out[b])
            best = _row_max_key(keys[i], mask, best)
        top[b] = best


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


def _values(keys: Keys) -> np.ndarray:
    """The layer's signed weights as an array the kernels read: a view of the float bits (bfloat16 stays bits;
    float16, which numba does not add, is widened)."""
    a = keys.data
    if keys.float_dtype is None or keys.float_dtype == "bfloat16":
        return a
    values = a.view(np.dtype(keys.float_dtype))
    return values.astype(np.float32) if values.dtype == np.float16 else values


def _pivot(keys: Keys) -> float:
    """A rough mean from evenly spaced weights: the sums are taken about it, so that the central moments do not
    cancel when the mean is far from zero."""
    a = keys.data
    flat = np.linspace(0, a.size - 1, min(a.size, PIVOT_SAMPLE)).astype(np.int64)
    part = a[flat // a.shape[1], flat % a.shape[1]]
    if keys.float_dtype == "bfloat16":
        part = (part.astype(np.uint32) << 16).view(np.float32)
    elif keys.float_dtype is not None:
        part = part.view(np.dtype(keys.float_dtype))
    return float(np.mean(part.astype(np.float64)))


def weight_statistics(keys: Keys) -> WeightStatistics:
    """:class:`WeightStatistics` of a layer given as keys (:func:`~neural_persistence.core.weights.to_keys`):
    one parallel pass over the weights, sums in float64."""
    n, m = keys.data.shape
    count = n * m
    pivot = _pivot(keys)
    blocks = min(BLOCKS, n)
    out = np.zeros((blocks, 5))
    top = np.zeros(blocks, np.dtype(f"u{keys.data.dtype.itemsize}"))
    if keys.float_dtype == "bfloat16":
        _sums_bfloat16(keys.data, keys.mask, pivot, out, top)
    else:
        _sums(_values(keys), keys.data, keys.mask, pivot, out, top)
    d1, d2, d3, d4, s_abs = out.sum(axis=0) / count
    s_sq = d2 + 2 * pivot * d1 + pivot * pivot  # mean of w^2, from the sums about the pivot
    largest = float(keys.decode(np.array([top.max()]))[0])
    variance = d2 - d1 * d1
    central4 = d4 - 4 * d1 * d3 + 6 * d1 * d1 * d2 - 3 * d1**4
    rms = math.sqrt(s_sq)
    return WeightStatistics(
        rms=rms,
        outlier_ratio=largest / rms if rms > 0 else math.nan,
        excess_kurtosis=central4 / variance**2 - 3.0 if variance > 1e-300 * max(1.0, pivot * pivot) else math.nan,
        spread=(s_sq - s_abs * s_abs) / largest**2 if largest > 0 else math.nan,
        frobenius=math.sqrt(s_sq * count),
    )
