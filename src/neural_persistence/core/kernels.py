"""Numba kernels behind the maximum-spanning-tree values of one layer.

The kernels never see floats: every weight is read as a monotone unsigned *key* whose integer order is the order
of |w| (the bits of a float with the sign bit cleared, or |x| of an integer). Edge (i, j) joins row vertex i and
column vertex n + j. All kernels release the GIL so that blocks and layers run in parallel Python threads.
"""

from __future__ import annotations

from typing import Any

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

#: Elements per chunk of a row: the read notes which chunks hold an edge to collect and looks only into those.
CHUNK = 64
#: Rows per group for column maxima.
GROUP = 16
#: Index of the lowest set bit of a power of two x: ``LOW_BIT[(x * DE_BRUIJN) >> 58]`` (a de Bruijn sequence).
DE_BRUIJN = np.uint64(0x022FDD63CC95386D)
LOW_BIT = np.zeros(64, np.int64)
for _b in range(64):
    LOW_BIT[((1 << _b) * int(DE_BRUIJN) % 2**64) >> 58] = _b


def abs_key(x, mask):  # type: ignore[no-untyped-def]
    """|x| as an unsigned integer whose order is the order of |w| (pure-Python stand-in)."""
    raise NotImplementedError  # only ever called from jitted code


@overload(abs_key)
def _abs_key_impl(x, mask):  # type: ignore[no-untyped-def]
    bits: int = getattr(x, "bitwidth", 0)
    if isinstance(x, types.Integer) and getattr(x, "signed", False):
        unsigned = types.Integer.from_bitwidth(bits, signed=False)
        shift = bits - 1

        def signed_impl(x, mask):  # type: ignore[no-untyped-def]
            sign = x >> shift  # 0 or -1: a branch-free |x| that vectorizes, exact for the most negative value
            return unsigned((x ^ sign) - sign)

        return signed_impl

    same = x

    def unsigned_impl(x, mask):  # type: ignore[no-untyped-def]
        return same(x & mask)

    return unsigned_impl


@nb.njit(cache=True, nogil=True)
def scan_rows(a, mask, row0, lo, collect, col_key, col_group, weak_rows, weak_key, weak_col, buf_key, buf_row, buf_col):
    """One read of a block of rows: maxima of columns, the edges with key >= ``lo``, best edges of weak rows.

    Edges are collected only when ``collect``. A *weak* row holds no collected edge; its best edge (largest key,
    smallest column) is recorded, found while the row is still in cache. For columns, the read records the maximum
    and the first group of ``GROUP`` rows where it occurs (row-level tracking would cost more than the read
    itself); :func:`column_best_rows` finds the row inside that group for the few columns that need it. Both
    follow one total order of the edges: key descending, then linear index ascending.
    Returns ``(edges, weak)``: how many edges were found (more than the buffers hold means overflow) and how many
    weak rows were recorded.
    """
    n, m = a.shape
    full = m // CHUNK
    count = 0
    nweak = 0
    group_max = np.empty(m, col_key.dtype)
    noted = np.empty(full + 1, np.int64)  # first columns of the current row's chunks that hold an edge to collect
    flags = np.zeros(CHUNK, np.uint8)  # scratch for _collect
    for g0 in range(0, n, GROUP):
        group_max[:] = 0
        for r in range(g0, min(g0 + GROUP, n)):
            row = a[r]
            nnoted = 0
            for c0 in range(0, full * CHUNK, CHUNK):
                hit = False
                for j in range(c0, c0 + CHUNK):  # the hot loop: fixed length and branch-free, so it vectorizes
                    k = abs_key(row[j], mask)
                    group_max[j] = max(group_max[j], k)
                    hit |= k >= lo
                noted[nnoted] = c0
                nnoted += hit  # branch-free: a chunk holds an edge about as often as not
            hit = False
            for j in range(full * CHUNK, m):  # the last, shorter chunk
                k = abs_key(row[j], mask)
                group_max[j] = max(group_max[j], k)
                hit |= k >= lo
            noted[nnoted] = full * CHUNK
            nnoted += hit
            if collect and nnoted:
                count = _collect(row, mask, row0 + r, lo, noted, nnoted, flags, buf_key, buf_row, buf_col, count)
            else:
                weak_rows[nweak] = row0 + r
                weak_key[nweak], weak_col[nweak] = _row_best(row, mask)
                nweak += 1
        better_group = row0 + g0
        for j in range(m):  # merge the group's maxima; a later group wins only when strictly larger
            better = group_max[j] > col_key[j]
            col_key[j] = max(col_key[j], group_max[j])
            col_group[j] = better_group if better else col_group[j]
    return count, nweak


@nb.njit(inline="always", cache=True, nogil=True)
def _collect(row, mask, r, lo, noted, nnoted, flags, buf_key, buf_row, buf_col, count):
    """Append the edges of ``row`` with key >= ``lo`` in its noted chunks.

    A chunk's hits are found without a branch per element: one vectorized compare writes 64 byte flags, read back
    as eight words whose set bits are visited directly. Past the buffers' capacity edges are only counted, so
    that a count above it tells the caller that the buffers overflowed.
    """
    m = row.shape[0]
    cap = buf_key.shape[0]
    words = flags.view(np.uint64)
    for t in range(nnoted):
        c0 = noted[t]
        if c0 + CHUNK > m:  # the last, shorter chunk
            for j in range(c0, m):
                k = abs_key(row[j], mask)
                if k >= lo:
                    if count < cap:
                        buf_key[count], buf_row[count], buf_col[count] = k, r, j
                    count += 1
            continue
        for j in range(CHUNK):  # fixed length: vectorizes
            flags[j] = abs_key(row[c0 + j], mask) >= lo
        for w in range(CHUNK // 8):
            bits = words[w]
            while bits:
                low = bits & (~bits + np.uint64(1))
                bits ^= low
                j = c0 + 8 * w + (LOW_BIT[(low * DE_BRUIJN) >> np.uint64(58)] >> 3)
                if count < cap:
                    buf_key[count], buf_row[count], buf_col[count] = abs_key(row[j], mask), r, j
                count += 1
    return count


@nb.njit(cache=True, nogil=True)
def _row_best(row, mask):
    """Largest key of a row and the first column holding it."""
    best = abs_key(row[0], mask)
    for j in range(row.shape[0]):
        best = max(best, abs_key(row[j], mask))
    j = 0
    while abs_key(row[j], mask) != best:
        j += 1
    return best, j


@nb.njit(cache=True, nogil=True)
def column_best_rows(a, mask, cols, col_key, col_group):
    """The first row holding each column's maximum, searched inside the group :func:`scan_rows` recorded."""
    rows = np.empty(len(cols), np.int64)
    for t in range(len(cols)):
        j = cols[t]
        r = col_group[j]
        while abs_key(a[r, j], mask) != col_key[j]:
            r += 1
        rows[t] = r
    return rows


@nb.njit(inline="always", cache=True, nogil=True)
def find(parent, v):
    """Root of ``v`` with path halving."""
    while parent[v] != v:
        parent[v] = parent[parent[v]]
        v = parent[v]
    return v


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
def kruskal(keys, rows, cols, n, parent, size, out, out_count, components):
    """Add the edges in the order given (descending key); accepted keys are appended to ``out``.

    Returns the new ``(out_count, components)``; stops as soon as one component is left. The edges come as
    contiguous arrays in order: reading them in sequence is what keeps union-find the only random access.
    """
    for e in range(keys.shape[0]):
        if components == 1:
            break
        if union(parent, size, rows[e], n + cols[e]):
            out[out_count] = keys[e]
            out_count += 1
            components -= 1
    return out_count, components


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
