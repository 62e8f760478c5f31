"""Exact maximum-spanning-tree values of a layer's complete bipartite graph, reading the weights about once.

Why this is exact (Kruskal adds edges from strongest to weakest; its values are the 0-dimensional deaths):

1. One pass finds every row's and every column's strongest edge (Boruvka's first round, ties broken by one total
   order: key descending, then index) and collects the edges at or above a threshold ``t`` drawn from a sample.
2. Kruskal on the collected edges is exactly the first part of Kruskal on all edges. The Boruvka edges below ``t``
   belong to the tree too, so they are added next. The multiset of tree values does not depend on how ties are
   broken, so the values found so far are final.
3. Whatever is still disconnected is joined by Boruvka rounds on the contracted graph. Every edge leaving a small
   component touches one of its vertices, so each round reads only the rows and columns outside the largest
   component.

A sample-chosen ``t`` only decides how much work each step does, never the answer.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from . import kernels
from .weights import Keys, infinite_key

__all__ = ["TreeValues", "tree_values"]

#: Collect about this many edges per vertex; the rest of the tree comes from the Boruvka steps.
EDGES_PER_VERTEX = 3.0
#: Below this many weights a layer is solved by sorting all its edges.
SMALL_LAYER = 1 << 14
SAMPLE_SIZE = 1 << 14


@dataclass(frozen=True)
class TreeValues:
    """The n + m - 1 maximum-spanning-tree edge values of a layer, as raw |w| (descending), its max |w|, and the
    layer's shape as given."""

    values: np.ndarray
    max_abs: float
    shape: tuple[int, int]


class NonFiniteWeightsError(ValueError):
    """A layer holds NaN or infinite weights."""


def tree_values(
    keys: Keys,
    executor: Executor | None = None,
    blocks: int = 1,
    name: str = "layer",
    *,
    edges_per_vertex: float = EDGES_PER_VERTEX,
    small_layer: int = SMALL_LAYER,
    capacity: int | None = None,
) -> TreeValues:
    """Maximum-spanning-tree values of one layer's bipartite graph.

    Parameters
    ----------
    keys
        The layer, as returned by :func:`~neural_persistence.core.weights.to_keys`.
    executor, blocks
        Split the rows into ``blocks`` parts read in parallel by ``executor`` (the kernels release the GIL).
    edges_per_vertex, small_layer, capacity
        Tuning of the work split (the answer never depends on them): edges collected per vertex, the size below
        which all edges are sorted, and the edge buffer of each block. Tests use them to force every path.
    """
    a = keys.data
    n, m = a.shape
    key_dtype = np.dtype(f"u{a.dtype.itemsize}")
    lo = _pick_threshold(keys, key_dtype, edges_per_vertex, small_layer)
    per_block_cap = capacity or _capacity(n, m, blocks, edges_per_vertex, small_layer)
    while True:
        scan = _scan(keys, key_dtype, lo, executor, blocks, per_block_cap)
        _check_finite(keys, scan.col_key, name)
        if not scan.overflow:
            break
        lo = _raise_threshold(keys, key_dtype, lo)  # far more edges tie at the threshold than the sample promised
    values = _join(keys, key_dtype, scan, lo)
    max_abs = float(keys.decode(np.array([scan.col_key.max()]))[0])
    return TreeValues(np.sort(keys.decode(values))[::-1], max_abs, keys.shape)


@dataclass
class _Scan:
    col_key: np.ndarray
    col_group: np.ndarray
    weak_rows: np.ndarray  # rows without a collected edge, and their best edges
    weak_key: np.ndarray
    weak_col: np.ndarray
    edge_key: np.ndarray  # the collected edges: every edge with key >= lo
    edge_row: np.ndarray
    edge_col: np.ndarray
    overflow: bool
    group: int  # rows per group of col_group


def _capacity(n: int, m: int, blocks: int, edges_per_vertex: float, small_layer: int) -> int:
    if n * m <= small_layer:
        return n * m
    target = edges_per_vertex * (n + m)
    return int(4 * target / blocks + 1024)


def _sample_keys(keys: Keys, key_dtype: np.dtype) -> np.ndarray:
    a = keys.data
    n, m = a.shape
    step = max(1, int(math.sqrt(n * m / SAMPLE_SIZE)))
    sample = a[:: max(1, min(step, n // 8 or 1)), :: max(1, step)]
    if a.dtype.kind == "i":
        return np.abs(sample.astype(np.int64)).astype(key_dtype)
    return (sample & keys.mask).astype(key_dtype, copy=False)


def _pick_threshold(keys: Keys, key_dtype: np.dtype, edges_per_vertex: float, small_layer: int) -> int | None:
    """The smallest key to collect (``None``: collect nothing), so that about ``edges_per_vertex`` edges per vertex
    are collected."""
    n, m = keys.data.shape
    if n * m <= small_layer:
        return 0  # collect everything
    sample = _sample_keys(keys, key_dtype).ravel()
    want = edges_per_vertex * (n + m) / (n * m)  # fraction of edges to collect
    pos = min(len(sample) - 1, max(0, int(len(sample) * (1.0 - want))))
    threshold = int(np.partition(sample, pos)[pos])
    expected = np.count_nonzero(sample >= threshold) / len(sample) * n * m
    if expected > 2 * edges_per_vertex * (n + m):  # a crowd of ties sits at the threshold: collect above it
        return _above(threshold, key_dtype)
    return threshold


def _above(key: int, key_dtype: np.dtype) -> int | None:
    return key + 1 if key < np.iinfo(key_dtype).max else None


def _raise_threshold(keys: Keys, key_dtype: np.dtype, lo: int | None) -> int | None:
    assert lo is not None, "internal error: nothing collected, yet the buffer overflowed"
    sample = np.unique(_sample_keys(keys, key_dtype))
    above = sample[sample >= lo]
    if len(above) <= 1:
        return _above(lo, key_dtype) if len(above) == 0 else _above(int(above[0]), key_dtype)
    return int(above[len(above) // 2])


def _scan(keys, key_dtype, lo, executor, blocks, cap) -> _Scan:  # type: ignore[no-untyped-def]
    a = keys.data
    n, m = a.shape
    col_key = np.zeros((blocks, m), key_dtype)
    col_group = np.zeros((blocks, m), np.int32)
    weak_rows = np.empty(n, np.int64)
    weak_key = np.empty(n, key_dtype)
    weak_col = np.empty(n, np.int64)
    buf_key = np.empty((blocks, cap), key_dtype)
    buf_row = np.empty((blocks, cap), np.int64)
    buf_col = np.empty((blocks, cap), np.int64)
    collect = lo is not None
    threshold = key_dtype.type(lo if collect else 0)
    group = kernels.GROUP_1BYTE if key_dtype.itemsize == 1 else kernels.GROUP
    # Blocks start at whole groups: the kernel numbers groups from the first row of the matrix.
    bounds = np.minimum(np.linspace(0, -(-n // group), blocks + 1).round().astype(np.int64) * group, n)

    def run(b: int) -> tuple[int, int]:
        r0, r1 = bounds[b], bounds[b + 1]
        return kernels.scan_rows(  # type: ignore[no-any-return]
            a[r0:r1], keys.mask, r0, threshold, collect, group, col_key[b], col_group[b],
            weak_rows[r0:r1], weak_key[r0:r1], weak_col[r0:r1], buf_key[b], buf_row[b], buf_col[b],
        )

    live = [b for b in range(blocks) if bounds[b] < bounds[b + 1]]
    results = list(executor.map(run, live)) if executor is not None and len(live) > 1 else [run(b) for b in live]
    counts = [c for c, _ in results]
    weak = np.concatenate([np.arange(bounds[b], bounds[b] + w) for b, (_, w) in zip(live, results)])
    # Merge column maxima: a later block wins only when strictly larger, which keeps the first row on ties.
    best, best_group = col_key[live[0]], col_group[live[0]]
    for b in live[1:]:
        better = col_key[b] > best
        best[better] = col_key[b][better]
        best_group[better] = col_group[b][better]
    return _Scan(
        best, best_group, weak_rows[weak], weak_key[weak], weak_col[weak],
        np.concatenate([buf_key[b, :c] for b, c in zip(live, counts)]),
        np.concatenate([buf_row[b, :c] for b, c in zip(live, counts)]),
        np.concatenate([buf_col[b, :c] for b, c in zip(live, counts)]),
        any(c > cap for c in counts),
        group,
    )


def _check_finite(keys: Keys, col_key: np.ndarray, name: str) -> None:
    bad = infinite_key(keys)
    if bad is None or col_key.max() < bad:
        return
    rows = np.flatnonzero(((keys.data & keys.mask) >= bad).any(axis=1))  # only on the way to the error
    axis = "column" if keys.transposed else "row"
    raise NonFiniteWeightsError(
        f"layer {name!r} contains NaN or infinite weights (first in {axis} {int(rows[0])} of {len(rows)} "
        f"affected); fix the checkpoint or skip this layer"
    )


def _join(keys: Keys, key_dtype: np.dtype, scan: _Scan, lo: int | None) -> np.ndarray:
    """Steps 2 and 3 of the module docstring: the tree's keys, in no particular order."""
    a = keys.data
    n, m = a.shape
    parent = np.arange(n + m, dtype=np.int64)
    size = np.ones(n + m, dtype=np.int64)
    out = np.empty(n + m - 1, key_dtype)
    # Ties may come in any order here (the tree's values do not depend on it): radix sort for 16-bit keys,
    # numpy's SIMD quicksort for wider ones, whichever is faster. Kruskal then reads the edges in order.
    order = np.argsort(scan.edge_key, kind="stable" if key_dtype.itemsize <= 2 else "quicksort")[::-1]
    count, components = kernels.kruskal(
        scan.edge_key[order], scan.edge_row[order], scan.edge_col[order], n, parent, size, out, 0, n + m
    )
    # Boruvka edges below the threshold, all in the tree, in any order: the best edges of the rows and of the
    # columns that hold no collected edge.
    count, components = kernels.kruskal(
        scan.weak_key, scan.weak_rows, scan.weak_col, n, parent, size, out, count, components
    )
    weak = np.flatnonzero(scan.col_key < lo) if lo is not None else np.arange(m)
    if len(weak) and components > 1:
        w_row = kernels.column_best_rows(a, keys.mask, weak, scan.col_key, scan.col_group, scan.group)
        count, components = kernels.kruskal(scan.col_key[weak], w_row, weak, n, parent, size, out, count, components)
    while components > 1:
        comp, sizes = kernels.component_labels(parent, n + m)
        outside = comp != np.argmax(sizes)
        c = len(sizes)
        best_key = np.zeros(c, key_dtype)
        best_row = np.full(c, -1, np.int64)
        best_col = np.full(c, -1, np.int64)
        kernels.best_outgoing(
            a, keys.mask, comp, np.flatnonzero(outside[:n]), np.flatnonzero(outside[n:]),
            best_key, best_row, best_col,
        )
        chosen = best_row >= 0
        count, components = kernels.kruskal(
            best_key[chosen], best_row[chosen], best_col[chosen], n, parent, size, out, count, components
        )
    assert count == n + m - 1, "internal error: spanning tree incomplete"
    return out
