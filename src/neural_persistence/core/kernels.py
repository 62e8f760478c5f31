"""Numba kernels that read a layer: the one pass over the weights, and the few reads that follow it.

The kernels never see floats: every weight is read as a monotone unsigned *key* whose integer order is the order
of |w| (the bits of a float with the sign bit cleared, or |x| of an integer). Edge (i, j) joins row vertex i and
column vertex n + j. All kernels release the GIL, so that layers run in parallel Python threads. The union-find
side of the spanning tree is in :mod:`.forest`.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

#: Elements per chunk when searching a row.
CHUNK = 64
#: Rows per group (a multiple of 4, at most 32): the read keeps the maxima of the columns over each quad of rows of
#: a group, which point to where the edges to collect are, and merges them into the columns' maxima once a group.
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
def scan_rows(a, mask, row0, lo, collect, group, col_key, col_group, weak_rows, weak_key, weak_col,
              buf_key, buf_row, buf_col):
    """One read of a block of rows: maxima of columns, the edges with key >= ``lo``, best edges of weak rows.

    The rows are read in groups of ``group``, four rows at a time, keeping the maxima of the columns over each
    quad of rows: the hot loop is a plain vectorized max. A column whose group maximum reaches ``lo`` holds edges
    to collect; its quads that do are read again, still in cache, at a cost per edge rather than per row, however
    dense the edges. Which quads to read is data no branch predictor can learn, so the few branches left are on
    the quads (listed without a branch per column), none on their rows: all four are written at the end of the
    buffers, which advance by the ones that count. Edges are collected only when ``collect``.
    A *weak* row holds no collected edge; its best edge (largest key, smallest column) is recorded. For columns,
    the read records the maximum and the first group where it occurs (``col_group``, numbered from row 0 of the
    whole matrix, which ``row0`` is a multiple of ``group`` rows away from); :func:`column_best_rows` finds the row
    inside that group for the few columns that need it. Both follow one total order of the edges: key descending,
    then linear index ascending.
    Returns ``(edges, weak)``: how many edges were found (more than the buffers hold means overflow) and how many
    weak rows were recorded.

    No kernel here takes a view of a row: every view counts a reference on the array, an atomic that threads
    reading blocks of the same array would fight over.
    """
    n, m = a.shape
    count = 0
    nweak = 0
    col_key[:] = 0
    col_group[:] = 0
    # Quad maxima, rows padded by a cache line or more so that the quads of one column never share a cache set.
    quads = np.empty((group // 4, m + 64), col_key.dtype)
    code = np.zeros((m + 7) // 8 * 8, np.uint8)  # per column, bit q set where quad q's maximum reaches lo
    words = code.view(np.uint64)  # read eight columns at a time
    busy = np.empty(len(words), np.int64)  # the words with any quad to read
    spots = np.empty(m * (group // 4), np.uint64)  # the quads to read: 8 * column + quad
    for g0 in range(0, n, group):
        g1 = min(g0 + group, n)
        nq = _quad_max(a, mask, g0, g1, quads)
        _merge(quads, nq, col_group.dtype.type((row0 + g0) // group), lo, col_key, col_group, code)
        hit = np.uint64(0)  # bit r - g0 set: row r has a collected edge
        if collect:
            count, hit = _collect_group(a, mask, g0, g1, lo, row0, words, busy, spots, count, buf_key, buf_row,
                                         buf_col)
        for r in range(g0, g1):
            if not (hit >> np.uint64(r - g0)) & np.uint64(1):  # rare on most layers: a second read, from cache
                weak_rows[nweak] = row0 + r
                weak_key[nweak] = best = _row_max(a, r, mask)
                weak_col[nweak] = _first(a, r, mask, best)
                nweak += 1
    return count, nweak


@nb.njit(cache=True, nogil=True, parallel=True)
def scan_blocks(a, mask, bounds, lo, collect, group, col_key, col_group, weak_rows, weak_key, weak_col,
                buf_key, buf_row, buf_col, counts, weak_counts):
    """:func:`scan_rows` on the blocks of rows ``bounds[b]:bounds[b + 1]`` in parallel, block ``b`` writing row
    ``b`` of the column and edge buffers. Then the blocks' column maxima are merged into row 0 (a later block
    wins only when strictly larger, which keeps the first row on ties) and the weak rows moved to the front.
    Returns the number of weak rows."""
    blocks = len(bounds) - 1
    for b in nb.prange(blocks):
        r0, r1 = bounds[b], bounds[b + 1]
        counts[b], weak_counts[b] = scan_rows(
            a[r0:r1], mask, r0, lo, collect, group, col_key[b], col_group[b], weak_rows[r0:r1], weak_key[r0:r1],
            weak_col[r0:r1], buf_key[b], buf_row[b], buf_col[b],
        )
    for b in range(1, blocks):
        for j in range(col_key.shape[1]):
            better = col_key[b, j] > col_key[0, j]
            col_key[0, j] = max(col_key[0, j], col_key[b, j])
            col_group[0, j] = col_group[b, j] if better else col_group[0, j]
    nweak = weak_counts[0]
    for b in range(1, blocks):
        for t in range(bounds[b], bounds[b] + weak_counts[b]):
            weak_rows[nweak], weak_key[nweak], weak_col[nweak] = weak_rows[t], weak_key[t], weak_col[t]
            nweak += 1
    return nweak


@nb.njit(cache=True, nogil=True)
def _quad_max(a, mask, g0, g1, quads):
    """The hot loop: maxima of the columns over each quad of rows g0..g1-1 (the last quad may be short), stored in
    the rows of ``quads``; returns how many quads. A function of its own, so that the compiler sees nothing else."""
    m = a.shape[1]
    q = 0
    r = g0
    while r + 4 <= g1:
        for j in range(m):
            quads[q, j] = max(max(abs_key(a[r, j], mask), abs_key(a[r + 1, j], mask)),
                              max(abs_key(a[r + 2, j], mask), abs_key(a[r + 3, j], mask)))
        r += 4
        q += 1
    if r < g1:
        for j in range(m):
            quads[q, j] = abs_key(a[r, j], mask)
        for r in range(r + 1, g1):
            for j in range(m):
                quads[q, j] = max(quads[q, j], abs_key(a[r, j], mask))
        q += 1
    return q


@nb.njit(cache=True, nogil=True)
def _merge(quads, nq, here, lo, col_key, col_group, code):
    """Merge a group's column maxima (a later group wins only when strictly larger) and code, for each column,
    which of its quads hold edges to collect (0: none)."""
    one, two, four, eight, none = np.uint8(1), np.uint8(2), np.uint8(4), np.uint8(8), np.uint8(0)
    if nq == 4:  # a whole group of 16 rows, unrolled so that the loop vectorizes
        for j in range(col_key.shape[0]):
            q0, q1, q2, q3 = quads[0, j], quads[1, j], quads[2, j], quads[3, j]
            top = max(max(q0, q1), max(q2, q3))
            better = top > col_key[j]
            col_key[j] = max(col_key[j], top)
            col_group[j] = here if better else col_group[j]
            code[j] = ((one if q0 >= lo else none) | (two if q1 >= lo else none)
                       | (four if q2 >= lo else none) | (eight if q3 >= lo else none))
        return
    for j in range(col_key.shape[0]):  # the last, short group
        top = quads[0, j]
        c = np.uint8(quads[0, j] >= lo)
        for q in range(1, nq):
            top = max(top, quads[q, j])
            c |= np.uint8(quads[q, j] >= lo) << np.uint8(q)
        better = top > col_key[j]
        col_key[j] = max(col_key[j], top)
        col_group[j] = here if better else col_group[j]
        code[j] = c


@nb.njit(inline="always", cache=True, nogil=True)
def _collect_group(a, mask, g0, g1, lo, row0, words, busy, spots, count, buf_key, buf_row, buf_col):
    """Collect the edges of rows g0..g1-1 that reach lo, from the quads that ``words`` mark (bit 8 * b + q of word
    w: quad q of column 8 * w + b). Returns the new count and a bit per row of the group that got an edge.

    First the quads are listed (``spots``), then read, in a loop without a branch and with an unsigned write index
    (measured on 7B shapes: reading each quad as its bit was found cost 1.6-2x as much per edge)."""
    cap = buf_key.shape[0]
    hit = np.uint64(0)
    nbusy = 0
    for w in range(len(words)):  # the busy words, listed without a branch per word
        busy[nbusy] = w
        nbusy += words[w] != 0
    nspots = 0
    for t in range(nbusy):
        w = busy[t]
        bits = words[w]
        while bits:  # usually one bit a word
            spots[nspots] = np.uint64(64 * w + _low_bit(bits))  # 8 * column + quad
            bits &= bits - np.uint64(1)
            nspots += 1
    if (g1 - g0) % 4 == 0 and count + 4 * nspots <= cap:
        at = np.uint64(count)  # unsigned: stores indexed by it need no wraparound check
        for t in range(nspots):
            j = spots[t] >> np.uint64(3)
            h = np.int64(spots[t] & np.uint64(7)) * 4  # first row of the quad, in the group
            for i in range(4):  # each row's edge is written at the end, which advances only when it counts
                key = abs_key(a[g0 + h + i, j], mask)
                buf_key[at], buf_row[at], buf_col[at] = key, row0 + g0 + h + i, j
                took = key >= lo
                at += np.uint64(took)
                hit |= np.uint64(took) << np.uint64(h + i)
        return np.int64(at), hit
    for t in range(nspots):  # the last, short quad of a matrix, or buffers nearly full
        j = spots[t] >> np.uint64(3)
        r = g0 + np.int64(spots[t] & np.uint64(7)) * 4
        rows = _rows_at_least(a, mask, r, min(r + 4, g1), j, lo)
        while rows:
            i = r + _low_bit(rows)
            rows &= rows - np.uint64(1)
            if count < cap:
                buf_key[count], buf_row[count], buf_col[count] = abs_key(a[i, j], mask), row0 + i, j
            count += 1
            hit |= np.uint64(1) << np.uint64(i - g0)
    return count, hit


@nb.njit(inline="always", cache=True, nogil=True)
def _rows_at_least(a, mask, r0, r1, j, lo):
    """Bit i set where row r0 + i of column j reaches lo, for the (at most four) rows r0..r1-1, without branches."""
    if r1 - r0 == 4:
        return (np.uint64(abs_key(a[r0, j], mask) >= lo)
                | (np.uint64(abs_key(a[r0 + 1, j], mask) >= lo) << np.uint64(1))
                | (np.uint64(abs_key(a[r0 + 2, j], mask) >= lo) << np.uint64(2))
                | (np.uint64(abs_key(a[r0 + 3, j], mask) >= lo) << np.uint64(3)))
    bits = np.uint64(0)
    for r in range(r0, r1):
        bits |= np.uint64(abs_key(a[r, j], mask) >= lo) << np.uint64(r - r0)
    return bits


@nb.njit(inline="always", cache=True, nogil=True)
def _low_bit(bits):
    """Index of the lowest set bit of a non-zero uint64."""
    low = bits & (~bits + np.uint64(1))
    return LOW_BIT[(low * DE_BRUIJN) >> np.uint64(58)]


@nb.njit(cache=True, nogil=True)
def _row_max(a, r, mask):
    best = abs_key(a[r, 0], mask)
    for j in range(a.shape[1]):
        best = max(best, abs_key(a[r, j], mask))
    return best


@nb.njit(cache=True, nogil=True)
def _first(a, r, mask, key):
    """The first column of row ``r`` holding ``key``, found chunk by chunk."""
    m = a.shape[1]
    for c0 in range(0, m - m % CHUNK, CHUNK):
        hit = False
        for j in range(c0, c0 + CHUNK):  # fixed length: vectorizes
            hit |= abs_key(a[r, j], mask) == key
        if hit:
            break
    else:
        c0 = m - m % CHUNK
    while abs_key(a[r, c0], mask) != key:
        c0 += 1
    return c0


@nb.njit(cache=True, nogil=True)
def column_best_rows(a, mask, cols, col_key, col_group, group):
    """The first row holding each column's maximum, searched inside the group :func:`scan_rows` recorded."""
    rows = np.empty(len(cols), np.int64)
    for t in range(len(cols)):
        j = cols[t]
        r = np.int64(col_group[j]) * group
        while abs_key(a[r, j], mask) != col_key[j]:
            r += 1
        rows[t] = r
    return rows
