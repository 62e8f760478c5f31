"""Numba kernels of the spanning forest: union-find, Kruskal over sorted edges, Boruvka steps.

Vertices are rows 0..n-1 and columns n..n+m-1 of a layer's bipartite graph; edge keys are the monotone unsigned
keys of :mod:`.kernels`. All kernels release the GIL.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .kernels import abs_key, column_best_rows


@nb.njit(inline="always", cache=True, nogil=True)
def find(parent, v):
    """Root of ``v`` with path halving. Indices are unsigned: an array indexed by a signed integer checks each
    access for a negative index (measured: Kruskal a third faster without)."""
    u = np.uint64(v)
    while np.uint64(parent[u]) != u:
        parent[u] = parent[np.uint64(parent[u])]
        u = np.uint64(parent[u])
    return u


@nb.njit(inline="always", cache=True, nogil=True)
def union(parent, size, u, v):
    """Join the components of ``u`` and ``v``; False when they were already one."""
    ru = find(parent, u)
    rv = find(parent, v)
    if ru == rv:
        return False
    if size[ru] < size[rv]:
        ru, rv = rv, ru
    parent[rv] = ru
    size[ru] += size[rv]
    return True


@nb.njit(cache=True, nogil=True)
def counting_sort_desc(buf_key, buf_row, buf_col, counts, out_key, out_row, out_col):
    """The edges of all blocks (the first ``counts[b]`` of row ``b`` of each buffer) by descending key, by
    counting: for keys of one or two bytes, whose range is small, this beats any comparison sort."""
    if out_key.shape[0] == 0:
        return
    hi = np.uint64(0)
    lo = np.uint64(np.iinfo(buf_key.dtype).max)
    for b in range(len(counts)):
        for e in range(counts[b]):
            hi = max(hi, np.uint64(buf_key[b, e]))
            lo = min(lo, np.uint64(buf_key[b, e]))
    # Slot of the next edge of each key, largest key first; unsigned, as in find.
    start = np.zeros(hi - lo + np.uint64(1), np.uint64)
    for b in range(len(counts)):
        for e in range(counts[b]):
            start[hi - np.uint64(buf_key[b, e])] += np.uint64(1)
    total = np.uint64(0)
    for v in range(len(start)):
        start[v], total = total, total + start[v]
    for b in range(len(counts)):
        for e in range(counts[b]):
            key = hi - np.uint64(buf_key[b, e])
            p = start[key]
            start[key] = p + np.uint64(1)
            out_key[p], out_row[p], out_col[p] = buf_key[b, e], buf_row[b, e], buf_col[b, e]


@nb.njit(cache=True, nogil=True)
def new_forest(parent, size):
    """Every vertex its own component."""
    for v in range(parent.shape[0]):
        parent[v] = v
        size[v] = 1


@nb.njit(cache=True, nogil=True)
def kruskal(keys, rows, cols, n, parent, size, out, out_count, components):
    """Add the edges in the order given (descending key); accepted keys are appended to ``out``.

    Returns the new ``(out_count, components)``; stops as soon as one component is left. The edges come as
    contiguous arrays in order: reading them in sequence is what keeps union-find the only random access.
    """
    at = np.uint64(out_count)
    for e in range(keys.shape[0]):
        if components == 1:
            break
        if union(parent, size, rows[e], n + cols[e]):
            out[at] = keys[e]
            at += np.uint64(1)
            components -= 1
    return np.int64(at), components


@nb.njit(cache=True, nogil=True)
def best_outgoing(a, mask, comp, scan_rows_idx, scan_cols_idx, best_key, best_row, best_col):
    """Boruvka step on the contracted graph: each component's best edge to another component.

    Scans whole rows ``scan_rows_idx`` and whole columns ``scan_cols_idx``; ``comp[v]`` is the component id of
    vertex ``v`` (rows 0..n-1, columns n..n+m-1). Better means larger key, then smaller linear index, the same
    total order as :func:`scan_rows`, so the chosen edges never close a cycle. ``best_row == -1`` marks none yet.
    """
    n, m = a.shape
    for i in scan_rows_idx:
        ci = comp[i]
        for j in range(m):
            cj = comp[n + j]
            if ci != cj:
                k = abs_key(a[i, j], mask)
                _offer(best_key, best_row, best_col, ci, k, i, j, m)
                _offer(best_key, best_row, best_col, cj, k, i, j, m)
    for i in range(n):
        ci = comp[i]
        for j in scan_cols_idx:
            cj = comp[n + j]
            if ci != cj:
                k = abs_key(a[i, j], mask)
                _offer(best_key, best_row, best_col, ci, k, i, j, m)
                _offer(best_key, best_row, best_col, cj, k, i, j, m)


@nb.njit(inline="always", cache=True, nogil=True)
def _offer(best_key, best_row, best_col, c, k, i, j, m):
    br = best_row[c]
    if br < 0 or k > best_key[c] or (k == best_key[c] and i * m + j < br * m + best_col[c]):
        best_key[c] = k
        best_row[c] = i
        best_col[c] = j


@nb.njit(cache=True, nogil=True)
def component_labels(parent, n_vertices):
    """Dense component ids 0..c-1 for every vertex, and the size of each component."""
    label = np.full(n_vertices, -1, dtype=np.int64)
    comp = np.empty(n_vertices, dtype=np.int64)
    sizes = np.zeros(n_vertices, dtype=np.int64)
    c = 0
    for v in range(n_vertices):
        r = find(parent, v)
        if label[r] < 0:
            label[r] = c
            c += 1
        comp[v] = label[r]
        sizes[label[r]] += 1
    return comp, sizes[:c]


@nb.njit(cache=True, nogil=True)
def join(a, mask, lo, collect, group, edge_key, edge_row, edge_col, weak_key, weak_rows, weak_col, col_key,
         col_group, parent, size, out):
    """The spanning tree's keys from what the read found (steps 2 and 3 of ``spanning_tree``), in one call that
    holds no lock: many small matrices (attention heads) measured side by side then share the cores.

    ``edge_*``: the collected edges by descending key; ``weak_*``: the best edges of the rows without one;
    ``col_key``/``col_group``: every column's maximum and its group. Returns how many keys were written to ``out``.
    """
    n, m = a.shape
    new_forest(parent, size)
    count, components = kruskal(edge_key, edge_row, edge_col, n, parent, size, out, 0, n + m)
    # Boruvka edges below the threshold, all in the tree, in any order: the best edges of the rows and of the
    # columns that hold no collected edge.
    count, components = kruskal(weak_key, weak_rows, weak_col, n, parent, size, out, count, components)
    weak = np.flatnonzero(col_key < lo) if collect else np.arange(m)
    if len(weak) > 0 and components > 1:
        rows = column_best_rows(a, mask, weak, col_key, col_group, group)
        count, components = kruskal(col_key[weak], rows, weak, n, parent, size, out, count, components)
    while components > 1:  # exact Boruvka rounds over whatever is still apart
        comp, sizes = component_labels(parent, n + m)
        outside = comp != np.argmax(sizes)
        c = len(sizes)
        best_key = np.zeros(c, col_key.dtype)
        best_row = np.full(c, -1, np.int64)
        best_col = np.full(c, -1, np.int64)
        best_outgoing(a, mask, comp, np.flatnonzero(outside[:n]), np.flatnonzero(outside[n:]), best_key, best_row,
                      best_col)
        chosen = best_row >= 0
        count, components = kruskal(best_key[chosen], best_row[chosen], best_col[chosen], n, parent, size, out,
                                    count, components)
    return count
