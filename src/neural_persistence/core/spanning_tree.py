"""Exact maximum-spanning-tree values of a layer's complete bipartite graph, reading the weights about once.

Why this is exact (Kruskal adds edges from strongest to weakest; its values are the 0-dimensional deaths):

1. One pass collects the edges at or above a threshold ``t`` drawn from a sample, and finds every column's
   strongest edge and that of every row without a collected edge (Boruvka's first round; the other rows' are
   among the collected; ties broken by one total order: key descending, then index).
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
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import forest, kernels
from .scratch import scratch
from .threads import parallel_call
from .weights import Keys, infinite_key

__all__ = ["TreeValues", "tree_values"]

#: Collect about this many edges per vertex of a square layer; the rest of the tree comes from the Boruvka steps.
EDGES_PER_VERTEX = 3.0
#: Below this many weights a layer is solved by sorting all its edges.
SMALL_LAYER = 1 << 14
SAMPLE_SIZE = 1 << 14
#: The threshold's sample reads runs of this many neighbouring weights.
SAMPLE_RUN = 128
#: Layers with fewer vertices (n + m) number them, and their edges' ends, in 32 bits.
INT32_VERTICES = 2**31


@dataclass(frozen=True)
class TreeValues:
    """The n + m - 1 maximum-spanning-tree edge values of a layer, as raw |w| (descending), its max |w|, and the
    layer's shape as given."""

    values: np.ndarray
    max_abs: float
    shape: tuple[int, int]
    #: With ``at_least``: the keys the pass collected (every key at or above its threshold), descending.
    top: np.ndarray | None = None


class NonFiniteWeightsError(ValueError):
    """A layer holds NaN or infinite weights."""


def tree_values(
    keys: Keys,
    blocks: int = 1,
    name: str = "layer",
    *,
    edges_per_vertex: float = EDGES_PER_VERTEX,
    small_layer: int = SMALL_LAYER,
    capacity: int | None = None,
    at_least: int = 0,
) -> TreeValues:
    """Maximum-spanning-tree values of one layer's bipartite graph.

    Parameters
    ----------
    keys
        The layer, as returned by :func:`~neural_persistence.core.weights.to_keys`.
    blocks
        Split the rows into ``blocks`` parts read in parallel by numba's threads (see ``threads``).
    edges_per_vertex, small_layer, capacity
        Tuning of the work split (the answer never depends on them): edges collected per vertex, the size below
        which all edges are sorted, and the edge buffer of each block. Tests use them to force every path.
    """
    a = keys.data
    n, m = a.shape
    key_dtype = np.dtype(f"u{a.dtype.itemsize}")
    lo = _pick_threshold(keys, key_dtype, edges_per_vertex, small_layer, at_least)
    per_block_cap = capacity or _capacity(n, m, blocks, edges_per_vertex, small_layer, at_least)
    while True:
        scan = _scan(keys, key_dtype, lo, blocks, per_block_cap)
        _check_finite(keys, scan.col_key, name)
        if not scan.overflow:
            break
        lo = _raise_threshold(scan, key_dtype, lo)  # far more edges than the sample promised (ties, a tiny buffer)
    edges = _sorted_edges(scan, key_dtype)
    top = edges[0].copy() if at_least > 0 and lo is not None else None
    values = _join(keys, key_dtype, scan, lo, edges)
    max_abs = float(keys.decode(np.array([scan.col_key.max()]))[0])
    return TreeValues(keys.decode(np.sort(values)[::-1]), max_abs, keys.shape, top)  # keys sort faster than floats


@dataclass
class _Scan:
    col_key: np.ndarray
    col_group: np.ndarray
    weak_rows: np.ndarray  # rows without a collected edge, and their best edges
    weak_key: np.ndarray
    weak_col: np.ndarray
    edge_key: np.ndarray  # the collected edges, every edge with key >= lo: the first counts[b] of row b
    edge_row: np.ndarray
    edge_col: np.ndarray
    counts: np.ndarray
    overflow: bool


def _capacity(n: int, m: int, blocks: int, edges_per_vertex: float, small_layer: int, at_least: int = 0) -> int:
    if n * m <= small_layer:
        return n * m
    return int(4 * _edges_wanted(n, m, edges_per_vertex, at_least) / blocks + 1024)


def _edges_wanted(n: int, m: int, edges_per_vertex: float, at_least: int = 0) -> float:
    """How many edges to collect. On an elongated layer (an attention head: 64 x 2048) each vertex of the short side
    holds dozens of them, which keep the graph in one piece; the long side's vertices need fewer each, and what they
    miss their best edges supply. Fewer edges per vertex as the layer gets longer, down to half (measured: 20-30 %
    faster on head shapes, the same on square ones)."""
    ratio = max(n, m) / min(n, m)
    per_vertex = edges_per_vertex if ratio <= 2 else max(edges_per_vertex / 2, edges_per_vertex / math.sqrt(ratio / 2))
    return max(per_vertex * (n + m), 1.2 * at_least)  # a margin for the sample's error


def _sample_keys(data: np.ndarray, mask: Any, key_dtype: np.dtype) -> np.ndarray:
    """About ``SAMPLE_SIZE`` weights of each layer of a stack ``data[k]`` (1 in 64 of a small layer), in runs of
    neighbours from evenly spaced rows, each run further right than the last: the sample spans the whole layer, yet
    reads a few hundred cache lines rather than one line per weight. One row of keys per layer."""
    h, n, m = data.shape
    size = min(SAMPLE_SIZE, max(1024, n * m >> 6))
    rows = min(n, max(1, size // SAMPLE_RUN))
    width = min(m, max(SAMPLE_RUN, size // rows))
    row_step, col_step = n // rows, (m - width) // max(1, rows - 1)
    strides = (data.strides[0], row_step * data.strides[1] + col_step * data.strides[2], data.strides[2])
    sample = np.lib.stride_tricks.as_strided(data, (h, rows, width), strides, writeable=False).reshape(h, -1)
    if data.dtype.kind == "i":
        return np.abs(sample.astype(np.int64)).astype(key_dtype)
    return (sample & mask).astype(key_dtype, copy=False)


def _pick_threshold(keys: Keys, key_dtype: np.dtype, edges_per_vertex: float, small_layer: int,
                    at_least: int = 0) -> int | None:
    """The smallest key to collect (``None``: collect nothing), so that about ``edges_per_vertex`` edges per vertex
    (or ``at_least``) are collected."""
    return _pick_thresholds(keys.data[None], keys.mask, key_dtype, edges_per_vertex, small_layer, at_least)[0]


def _pick_thresholds(
    data: np.ndarray, mask: Any, key_dtype: np.dtype, edges_per_vertex: float, small_layer: int, at_least: int = 0
) -> list[int | None]:
    """:func:`_pick_threshold` of each layer of a stack, sampled and partitioned in one call for all."""
    h, n, m = data.shape
    if n * m <= small_layer:
        return [0] * h  # collect everything
    sample = _sample_keys(data, mask, key_dtype)
    size = sample.shape[1]
    wanted = _edges_wanted(n, m, edges_per_vertex, at_least)
    pos = min(size - 1, max(0, int(size * (1.0 - wanted / (n * m)))))
    thresholds = np.partition(sample, pos, axis=1)[:, pos]
    expected = np.count_nonzero(sample >= thresholds[:, None], axis=1) / size * n * m
    # Where a crowd of ties sits at the threshold, collect above it.
    return [_above(int(t), key_dtype) if e > 2 * wanted else int(t) for t, e in zip(thresholds, expected)]


def _above(key: int, key_dtype: np.dtype) -> int | None:
    return key + 1 if key < np.iinfo(key_dtype).max else None


def _raise_threshold(scan: _Scan, key_dtype: np.dtype, lo: int | None) -> int | None:
    """A higher threshold after the buffers overflowed: the median of the keys they hold (all >= ``lo``), or the
    next key when half of those tie at ``lo``. Each step halves what is collected or drops a whole tie, however
    little the sample saw of the largest weights (stepping to the next key alone could take 2**52 steps)."""
    assert lo is not None, "internal error: nothing collected, yet the buffer overflowed"
    held = np.concatenate(_collected(scan.edge_key, scan.counts))
    median = int(np.partition(held, len(held) // 2)[len(held) // 2])
    return median if median > lo else _above(lo, key_dtype)


def _scan(keys: Keys, key_dtype: np.dtype, lo: int | None, blocks: int, cap: int) -> _Scan:
    a = keys.data
    n, m = a.shape
    col_key = scratch("col_key", (blocks, m), key_dtype)
    col_group = scratch("col_group", (blocks, m), group_dtype(n, key_dtype))
    weak_rows = scratch("weak_rows", n, np.int64)
    weak_key = scratch("weak_key", n, key_dtype)
    weak_col = scratch("weak_col", n, np.int64)
    buf_key = scratch("buf_key", (blocks, cap), key_dtype)
    index = _index_dtype(n, m)
    buf_row = scratch("buf_row", (blocks, cap), index)
    buf_col = scratch("buf_col", (blocks, cap), index)
    counts = np.zeros(blocks, np.int64)
    collect = lo is not None
    threshold = key_dtype.type(lo if collect else 0)
    group = kernels.GROUP  # rows per group of col_group
    if blocks > 1:
        # Blocks start at whole groups: the kernel numbers groups from the first row of the matrix.
        bounds = np.minimum(np.linspace(0, -(-n // group), blocks + 1).round().astype(np.int64) * group, n)
        weak = parallel_call(
            kernels.scan_blocks, a, keys.mask, bounds, threshold, collect, group, col_key, col_group, weak_rows,
            weak_key, weak_col, buf_key, buf_row, buf_col, counts, np.zeros(blocks, np.int64),
        )
    else:
        counts[0], weak = kernels.scan_rows(
            a, keys.mask, 0, threshold, collect, group, col_key[0], col_group[0], weak_rows, weak_key, weak_col,
            buf_key[0], buf_row[0], buf_col[0],
        )
    return _Scan(
        col_key[0], col_group[0], weak_rows[:weak], weak_key[:weak], weak_col[:weak], buf_key, buf_row, buf_col,
        counts, bool((counts > cap).any()),
    )


def group_dtype(n: int, key_dtype: np.dtype) -> np.dtype:
    """Numbers of the groups of rows as wide as the keys (two bytes at least) where they fit: merging the columns'
    maxima then vectorizes at one lane width (measured on 7B shapes: a quarter to all of the merge's cost over the
    read saved, against 32-bit numbers beside 16-bit keys)."""
    width = max(2, key_dtype.itemsize)
    while 1 << (8 * width) < -(-n // kernels.GROUP):
        width *= 2
    return np.dtype(f"u{width}")


def _index_dtype(n: int, m: int) -> type:
    """Vertex numbers in 32 bits where they fit: half the memory traffic of sorting edges and of union-find."""
    return np.int32 if n + m < INT32_VERTICES else np.int64


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


def _join(keys: Keys, key_dtype: np.dtype, scan: _Scan, lo: int | None,
          edges: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Steps 2 and 3 of the module docstring: the tree's keys, in no particular order."""
    n, m = keys.data.shape
    out = np.empty(n + m - 1, key_dtype)
    count = forest.join(
        keys.data, keys.mask, key_dtype.type(lo if lo is not None else 0), lo is not None, kernels.GROUP,
        *edges, scan.weak_key, scan.weak_rows, scan.weak_col, scan.col_key, scan.col_group,
        scratch("parent", n + m, scan.edge_row.dtype), scratch("size", n + m, scan.edge_row.dtype), out,
    )
    assert count == n + m - 1, "internal error: spanning tree incomplete"
    return out


def _sorted_edges(scan: _Scan, key_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The collected edges by descending key (ties in any order: the tree's values do not depend on it).

    Kruskal then reads them in sequence. Keys of one or two bytes are sorted by counting; wider keys by
    numpy's SIMD quicksort on their concatenation.
    """
    total = int(scan.counts.sum())
    out = (scratch("edge_key", total, key_dtype), scratch("edge_row", total, scan.edge_row.dtype),
           scratch("edge_col", total, scan.edge_col.dtype))
    if key_dtype.itemsize <= 2:
        forest.counting_sort_desc(scan.edge_key, scan.edge_row, scan.edge_col, scan.counts, *out)
        return out
    joined = []
    for name, buf in zip(("key", "row", "col"), (scan.edge_key, scan.edge_row, scan.edge_col)):
        joined.append(np.concatenate(_collected(buf, scan.counts), out=scratch(f"joined_{name}", total, buf.dtype)))
    order = np.argsort(joined[0], kind="quicksort")[::-1]
    for source, target in zip(joined, out):
        np.take(source, order, out=target)
    return out


def _collected(buf: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Each block's part of an edge buffer: the first ``counts[b]`` entries of row ``b`` (all of it on overflow)."""
    return [buf[b, : min(int(c), buf.shape[1])] for b, c in enumerate(counts)]
