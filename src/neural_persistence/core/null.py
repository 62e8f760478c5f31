"""The null model of a layer: its spanning-tree values after a uniform random permutation of its entries, without
permuting.

Why it is cheap and exact. Kruskal adds edges from the largest |w| down and stops mattering once the graph is
connected: every later edge closes a cycle. Under a uniform permutation of the n x m entries, the cells that
hold the c largest values are c uniformly random distinct cells, in a uniformly random order, whatever the
values are. So a null sample is: the c largest values (found once per layer, shared by all samples) put at c
random distinct cells, then Kruskal on those c edges. If they connect the graph, the tree values are exactly
those of Kruskal on the permuted layer; ties do not matter (the multiset of tree values is the same for every
order of equal edges). If they do not, more cells are drawn for the next values, down to the whole layer.
c starts near what a random bipartite graph needs to connect: every row and every column must get an edge, which
takes about max(n ln n, m ln m) random edges (coupon collecting); 1.5 times that plus n + m makes a second
round rare.

The values are read once in one pass (keys at or above a threshold from a sample, as the engine does); each
sample then costs a draw of c cells and a union-find over c edges: far less than a pass over the weights.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from .kernels import abs_key
from .weights import Keys

__all__ = ["null_tree_values", "top_keys"]

SAMPLE = 1 << 15


@nb.njit(cache=True, nogil=True)
def _keys_at_least(a, mask, lo, out):  # type: ignore[no-untyped-def]
    """Write the keys >= lo of ``a`` into ``out`` (as many as fit); return how many there are."""
    count = 0
    n, m = a.shape
    cap = out.shape[0]
    for i in range(n):
        for j in range(m):
            key = abs_key(a[i, j], mask)
            if key >= lo:
                if count < cap:
                    out[count] = key
                count += 1
    return count


@nb.njit(cache=True, nogil=True)
def _find(parent, x):  # type: ignore[no-untyped-def]
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(cache=True, nogil=True)
def _kruskal(cells, m, parent, taken):  # type: ignore[no-untyped-def]
    """Kruskal over edges given in descending order of value as cells (row * m + col) of an n x m layer, the union-
    find ``parent`` carried over from earlier calls; marks ``taken[k]`` for each tree edge; returns how many."""
    n_rows = parent.shape[0] - m
    joined = 0
    for k in range(cells.shape[0]):
        row = cells[k] // m
        col = n_rows + cells[k] % m
        a = _find(parent, row)
        b = _find(parent, col)
        if a != b:
            parent[a] = b
            taken[k] = True
            joined += 1
    return joined


def _wanted(n: int, m: int) -> int:
    return int(1.5 * max(n * math.log(max(n, 2)), m * math.log(max(m, 2)))) + n + m


def top_keys(keys: Keys, count: int) -> np.ndarray:
    """At least ``count`` of the largest keys of a layer (every key at or above a threshold, so ties at the
    threshold are all in), in descending order; all keys when ``count`` reaches the layer's size."""
    a = keys.data
    total = a.shape[0] * a.shape[1]
    flat_keys = np.empty(0, dtype=np.dtype(f"u{a.dtype.itemsize}"))
    if count >= total // 4:
        out = np.empty(total, dtype=flat_keys.dtype)
        _keys_at_least(a, keys.mask, flat_keys.dtype.type(0), out)
        return np.sort(out)[::-1]
    rng = np.random.default_rng(0)  # the threshold's sample decides only the work, never the answer
    rows = rng.integers(0, a.shape[0], SAMPLE)
    cols = rng.integers(0, a.shape[1], SAMPLE)
    sample = a[rows, cols]
    sample = (np.abs(sample.astype(np.int64)) if a.dtype.kind == "i" else sample & keys.mask).astype(flat_keys.dtype)
    share = min(1.0, 2.0 * count / total)  # twice the count: the sample's error rarely leaves too few
    while True:
        lo = np.quantile(sample, 1.0 - share, method="lower") if share < 1.0 else 0
        cap = int(min(total, max(4 * share * total, count) + 1024))
        out = np.empty(cap, dtype=flat_keys.dtype)
        found = _keys_at_least(a, keys.mask, flat_keys.dtype.type(lo), out)
        if found <= cap and (found >= count or lo == 0):
            return np.sort(out[:found])[::-1]
        share = min(1.0, share * 4) if found < count else share / 2


def null_tree_values(keys: Keys, samples: int, seed: int | np.random.SeedSequence = 0,
                     top: np.ndarray | None = None, first: int | None = None) -> list[np.ndarray]:
    """Spanning-tree values (|w|, descending) of ``samples`` uniform random permutations of a layer's entries.

    Sample ``i`` uses the generator ``np.random.default_rng(SeedSequence(seed).spawn(samples)[i])``, so a run that
    asks for more samples later extends the same sequence. ``top`` may pass :func:`top_keys` of the layer.
    ``first``: how many of the largest values to place before the second round (default: about what connects a
    random bipartite graph; tests make it small to force the second round).
    """
    a = keys.data
    n, m = a.shape
    total = n * m
    wanted = min(total, first if first is not None else _wanted(n, m))
    top = top if top is not None and len(top) >= wanted else top_keys(keys, wanted)
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    trees = []
    for child in sequence.spawn(samples):
        rng = np.random.default_rng(child)
        parent = np.arange(n + m, dtype=np.int64)
        used = len(top)
        cells = rng.choice(total, used, replace=False) if used < total else rng.permutation(total)
        taken = np.zeros(used, np.bool_)
        joined = _kruskal(cells.astype(np.int64), m, parent, taken)
        values = [top[taken]]
        if joined < n + m - 1:  # rare: the rest of the layer, at the cells not drawn yet, in random order
            everything = top_keys(keys, total)
            free = np.ones(total, np.bool_)
            free[cells] = False
            rest = rng.permutation(np.flatnonzero(free))
            more = np.zeros(len(rest), np.bool_)
            _kruskal(rest.astype(np.int64), m, parent, more)
            values.append(everything[used:][more])
        trees.append(keys.decode(np.concatenate(values)))
    return trees
