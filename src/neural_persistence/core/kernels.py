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

#: Elements per chunk of a row: a chunk whose maximum is below the threshold is not looked at twice.
CHUNK = 64
#: Rows per group for column maxima.
GROUP = 16
#: Elements per slice of a chunk that holds a collected edge.
SLICE = 16


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
def scan_rows(a, mask, row0, threshold, strict, row_key, row_col, col_key, col_group, buf_key, buf_row, buf_col):
    """One read of a block of rows: best edges of rows, maxima of columns, and the edges at or above ``threshold``.

    A row's best edge is its largest key at the smallest column. For columns, the read records the maximum and
    the first group of ``GROUP`` rows where it occurs (exact row-level tracking would cost more than the read
    itself); :func:`column_best_rows` finds the row inside that group for the few columns that need it. Both
    follow one total order of the edges: key descending, then linear index ascending.
    Returns ``(count, overflow)`` where ``count`` edges were written to the buffers.
    """
    n, m = a.shape
    full = m // CHUNK
    count = 0
    overflow = False
    group_max = np.empty(m, col_key.dtype)
    flagged = np.empty(full + 1, np.int64)  # the chunks of the current row that hold an edge to collect
    for g in range((n + GROUP - 1) // GROUP):
        g0 = g * GROUP
        group_max[:] = 0
        for r in range(g0, min(g0 + GROUP, n)):
            row = a[r]
            rmax = abs_key(row[0], mask)
            rchunk = 0
            nflagged = 0
            for c in range(full):
                c0 = c * CHUNK
                cmax = abs_key(row[c0], mask)
                for j in range(c0, c0 + CHUNK):  # the hot loop: fixed length and branch-free, so it vectorizes
                    k = abs_key(row[j], mask)
                    cmax = max(cmax, k)
                    group_max[j] = max(group_max[j], k)
                if cmax > rmax:
                    rmax, rchunk = cmax, c0
                if cmax > threshold or (cmax == threshold and not strict):
                    flagged[nflagged] = c0
                    nflagged += 1
            if full * CHUNK < m:  # the last, shorter chunk
                c0 = full * CHUNK
                cmax = abs_key(row[c0], mask)
                for j in range(c0, m):
                    k = abs_key(row[j], mask)
                    cmax = max(cmax, k)
                    group_max[j] = max(group_max[j], k)
                if cmax > rmax:
                    rmax, rchunk = cmax, c0
                if cmax > threshold or (cmax == threshold and not strict):
                    count, overflow = _collect_tail(row, mask, row0 + r, c0, m, threshold, strict,
                                                    buf_key, buf_row, buf_col, count, overflow)
            if nflagged:  # one call per row, outside the hot loop, while the row is still in cache
                count, overflow = _collect_chunks(row, mask, row0 + r, flagged[:nflagged], threshold, strict,
                                                  buf_key, buf_row, buf_col, count, overflow)
            row_key[r] = rmax
            arg = rchunk
            while abs_key(row[arg], mask) != rmax:
                arg += 1
            row_col[r] = arg
        for j in range(m):
            if group_max[j] > col_key[j]:  # rare after the first groups: a well-predicted branch
                col_key[j] = group_max[j]
                col_group[j] = row0 + g0
    return count, overflow


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


@nb.njit(cache=True, nogil=True)
def _collect_chunks(row, mask, r, chunks, threshold, strict, buf_key, buf_row, buf_col, count, overflow):
    """Append the edges at or above the threshold of the given full chunks, looking only into slices that hold one.

    Called, not inlined, once per row: its code inside the hot loop would keep that loop from vectorizing well.
    """
    for c0 in chunks:
        for s in range(CHUNK // SLICE):
            s0 = c0 + s * SLICE
            smax = abs_key(row[s0], mask)
            for j in range(s0, s0 + SLICE):  # fixed length: vectorizes
                smax = max(smax, abs_key(row[j], mask))
            if smax > threshold or (smax == threshold and not strict):
                count, overflow = _collect(row, mask, r, s0, s0 + SLICE, threshold, strict,
                                           buf_key, buf_row, buf_col, count, overflow)
    return count, overflow


@nb.njit(cache=True, nogil=True)
def _collect_tail(row, mask, r, c0, c1, threshold, strict, buf_key, buf_row, buf_col, count, overflow):
    """:func:`_collect` for the last, shorter chunk of a row (called, not inlined, like :func:`_collect_chunks`)."""
    return _collect(row, mask, r, c0, c1, threshold, strict, buf_key, buf_row, buf_col, count, overflow)


@nb.njit(inline="always", cache=True, nogil=True)
def _collect(row, mask, r, c0, c1, threshold, strict, buf_key, buf_row, buf_col, count, overflow):
    """Append the edges of ``row[c0:c1]`` at or above the threshold."""
    for j in range(c0, c1):
        k = abs_key(row[j], mask)
        if k > threshold or (k == threshold and not strict):
            if count < buf_key.shape[0]:
                buf_key[count] = k
                buf_row[count] = r
                buf_col[count] = j
                count += 1
            else:
                overflow = True
    return count, overflow


@nb.njit(cache=True, nogil=True)
def find(parent, v):
    """Root of ``v`` with path halving."""
    while parent[v] != v:
        parent[v] = parent[parent[v]]
        v = parent[v]
    return v


@nb.njit(cache=True, nogil=True)
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
def kruskal(order, keys, rows, cols, n, parent, size, out, out_count, components):
    """Add edges in the given (descending) order; accepted keys are appended to ``out``.

    Returns the new ``(out_count, components)``; stops as soon as one component is left.
    """
    for e in order:
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
