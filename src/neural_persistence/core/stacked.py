"""Spanning-tree values of many same-shaped small layers (the attention heads of a tensor) in one call.

Measured one at a time, a head costs more Python than numba: tens of microseconds of calls around a kernel that
reads it in about a hundred, and every kernel hands the interpreter lock to the other threads and waits to get it
back. Here the thresholds of all heads come from one sample and one partition, and one call that holds no lock
reads, sorts and joins every head: the same steps as :func:`~.spanning_tree.tree_values`, so the same answer. A head
that needs more care (NaN or infinite weights, an overflowing edge buffer) is measured again on its own by
``tree_values``, which raises or recovers exactly as for a single layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba as nb
import numpy as np

from . import forest, kernels
from .spanning_tree import (
    EDGES_PER_VERTEX,
    SMALL_LAYER,
    TreeValues,
    _capacity,
    _index_dtype,
    _pick_thresholds,
    group_dtype,
    tree_values,
)
from .weights import Keys, infinite_key

__all__ = ["tree_values_stack"]

#: Per-layer outcomes of :func:`stack_keys`: done, or measured again by ``tree_values`` (which raises or retries).
DONE, NOT_FINITE, OVERFLOW, INCOMPLETE = 0, 1, 2, 3


def tree_values_stack(
    keys: Keys,
    names: Sequence[str],
    *,
    edges_per_vertex: float = EDGES_PER_VERTEX,
    small_layer: int = SMALL_LAYER,
    capacity: int | None = None,
) -> list[TreeValues]:
    """:func:`~.spanning_tree.tree_values` of every layer ``keys.data[k]`` of a stack (see
    :func:`~.weights.to_key_stack`), named ``names[k]`` in errors. Same options, same answer."""
    data = keys.data
    h, n, m = data.shape
    key_dtype = np.dtype(f"u{data.dtype.itemsize}")
    thresholds = _pick_thresholds(data, keys.mask, key_dtype, edges_per_vertex, small_layer)
    lo = np.array([t or 0 for t in thresholds], key_dtype)
    collect = np.array([t is not None for t in thresholds])
    bad = infinite_key(keys)
    index = _index_dtype(n, m)
    out = np.empty((h, n + m - 1), key_dtype)
    top = np.empty(h, key_dtype)
    status = np.empty(h, np.int8)
    stack_keys(
        data, keys.mask, lo, collect, kernels.GROUP, capacity or _capacity(n, m, 1, edges_per_vertex, small_layer),
        key_dtype.type(bad or 0), bad is not None, np.empty(m, group_dtype(n, key_dtype)), np.empty(n + m, index),
        np.empty(n + m, index), out, top, status,
    )
    out[status != DONE] = 0  # unwritten rows: measured again below
    values = keys.decode(np.sort(out, axis=1)[:, ::-1])  # keys sort faster than floats
    max_abs = keys.decode(top)
    trees = []
    for k in range(h):
        if status[k] == DONE:
            trees.append(TreeValues(values[k], float(max_abs[k]), keys.shape))
        else:
            one = Keys(data[k], keys.mask, keys.float_dtype, keys.shape)
            trees.append(tree_values(one, 1, names[k], edges_per_vertex=edges_per_vertex, small_layer=small_layer,
                                     capacity=capacity))
    return trees


@nb.njit(cache=True, nogil=True)
def stack_keys(a, mask, lo, collect, group, cap, bad, check, col_group, parent, size, out, top, status):
    """Steps 1-3 of :mod:`.spanning_tree` for each layer ``a[k]``: the tree's keys into ``out[k]`` (in no order),
    the largest key into ``top[k]``, and the outcome into ``status[k]`` (``DONE`` or why not). ``col_group``:
    room for each column's group number, in the type of :func:`~.spanning_tree.group_dtype`."""
    h, n, m = a.shape
    col_key = np.empty(m, out.dtype)
    weak_rows = np.empty(n, np.int64)
    weak_key = np.empty(n, out.dtype)
    weak_col = np.empty(n, np.int64)
    buf_key = np.empty((1, cap), out.dtype)
    buf_row = np.empty((1, cap), parent.dtype)
    buf_col = np.empty((1, cap), parent.dtype)
    edge_key = np.empty(cap, out.dtype)
    edge_row = np.empty(cap, parent.dtype)
    edge_col = np.empty(cap, parent.dtype)
    counts = np.zeros(1, np.int64)
    for k in range(h):
        count, weak = kernels.scan_rows(a[k], mask, 0, lo[k], collect[k], group, col_key, col_group, weak_rows,
                                        weak_key, weak_col, buf_key[0], buf_row[0], buf_col[0])
        top[k] = col_key.max()
        if check and top[k] >= bad:
            status[k] = NOT_FINITE
            continue
        if count > cap:
            status[k] = OVERFLOW
            continue
        counts[0] = count
        if out.itemsize <= 2:
            forest.counting_sort_desc(buf_key, buf_row, buf_col, counts, edge_key[:count], edge_row[:count],
                                      edge_col[:count])
        else:
            order = np.argsort(buf_key[0, :count])
            for e in range(count):
                t = order[count - 1 - e]
                edge_key[e], edge_row[e], edge_col[e] = buf_key[0, t], buf_row[0, t], buf_col[0, t]
        got = forest.join(a[k], mask, lo[k], collect[k], group, edge_key[:count], edge_row[:count], edge_col[:count],
                          weak_key[:weak], weak_rows[:weak], weak_col[:weak], col_key, col_group, parent, size, out[k])
        status[k] = DONE if got == n + m - 1 else INCOMPLETE
