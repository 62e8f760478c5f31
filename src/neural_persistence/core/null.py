"""The null model of a layer: its spanning-tree values after a uniform random permutation of its entries, without
permuting anything.

Why it is cheap and exact. Kruskal adds edges from the largest |w| down; the k-th largest value enters the tree
exactly when its cell joins two components of the graph built by the k - 1 larger ones. Under a uniform
permutation of the n x m entries, the cells of the values in descending order are a uniformly random sequence of
distinct cells, *whatever the values are*. So which ranks join, the set R, depends on the shape alone, and a null
sample is

    tree values = the layer's values sorted descending, taken at the ranks R

Ties do not matter: the multiset of tree values is the same for every order of equal edges. R is simulated once
per shape and sample (cells drawn with replacement, repeats skipped, which is a uniform sequence of distinct
cells; a union-find over the n + m vertices), cached for the process, and shared by every matrix of that shape:
the heads of a tensor, every block, every checkpoint. These are common random numbers: differences between
matrices and checkpoints carry no draw noise; the null's own error (its std over sqrt(K)) shrinks with K only.
The graph connects after about max(n ln n, m ln m) draws (every row and column must be hit, coupon collecting),
so the layer's part is its largest ~1e5 values, which the engine's one pass collects anyway
(:func:`~neural_persistence.core.spanning_tree.tree_values` with ``at_least``).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

from .kernels import abs_key
from .threads import available_threads
from .weights import Keys

__all__ = ["joining_ranks", "null_rank_sets", "null_ranks", "null_tree_keys", "null_tree_values", "ranks_needed", "top_keys"]

SAMPLE = 1 << 15
#: Layers with at most this many cells draw a whole permutation of them rather than cells with replacement.
SMALL_LAYER = 1 << 12


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
def _top_by_count(a, mask, count, hist):  # type: ignore[no-untyped-def]
    """The ``count`` largest keys of ``a`` (keys of at most 16 bits) and every key tied with the last, descending,
    by counting: one pass into ``hist`` (zeroed; left zeroed), then a walk down from the largest key."""
    n, m = a.shape
    for i in range(n):
        for j in range(m):
            hist[abs_key(a[i, j], mask)] += 1
    total = 0
    threshold = 0
    for key in range(hist.shape[0] - 1, -1, -1):
        if total >= count:
            threshold = key + 1
            break
        total += hist[key]
    out = np.empty(total, np.uint16)
    filled = 0
    for key in range(hist.shape[0] - 1, threshold - 1, -1):
        for _ in range(hist[key]):
            out[filled] = key
            filled += 1
    hist[:] = 0
    return out


@nb.njit(cache=True, nogil=True)
def _find(parent, x):  # type: ignore[no-untyped-def]
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@nb.njit(cache=True, nogil=True)
def _walk(cells, n_rows, m, parent, seen, limit, state, ranks):  # type: ignore[no-untyped-def]
    """Kruskal along a sequence of cells (row * m + col), the k-th distinct cell standing for the k-th largest
    value. With a bitmap ``seen`` (one bit per cell; empty: the cells are known distinct) a cell seen before is
    skipped, and the walk stops after ``limit`` distinct cells. ``state`` = (rank, joined) carries over between
    calls; the ranks that join are written to ``ranks``."""
    rank, joined = state[0], state[1]
    target = parent.shape[0] - 1
    check = seen.shape[0] > 0
    for k in range(cells.shape[0]):
        if joined == target or (check and rank >= limit):
            break
        c = cells[k]
        if check:
            byte, bit = c >> 3, np.uint8(1) << np.uint8(c & 7)
            if seen[byte] & bit:
                continue
            seen[byte] |= bit
        a = _find(parent, c // m)
        b = _find(parent, n_rows + c % m)
        if a != b:
            parent[a] = b
            ranks[joined] = rank
            joined += 1
        rank += 1
    state[0], state[1] = rank, joined


def _wanted(n: int, m: int) -> int:
    """About how many random cells connect the graph: coupon collecting over rows and columns, with room."""
    return int(1.5 * max(n * math.log(max(n, 2)), m * math.log(max(m, 2)))) + n + m


def joining_ranks(n: int, m: int, cells: np.ndarray) -> np.ndarray:
    """The ranks (0 = largest value) that join the tree when the values, in descending order, sit at ``cells``
    (row * m + col of an n x m layer; repeats skipped, the first time counts). The cells must connect the graph.

    The deterministic part of the null model, tested against building the permuted layer and measuring it."""
    parent = np.arange(n + m, dtype=np.int64)
    ranks = np.empty(n + m - 1, np.int64)
    state = np.zeros(2, np.int64)
    seen = np.zeros(n * m // 8 + 1, np.uint8)
    _walk(np.asarray(cells, np.int64), n, m, parent, seen, n * m, state, ranks)
    if state[1] != n + m - 1:
        raise ValueError(f"the {len(cells)} cells given do not connect the {n} x {m} graph")
    return ranks


def null_ranks(n: int, m: int, seed: int, index: int, first: int | None = None) -> np.ndarray:
    """Joining ranks of null sample ``index`` of an n x m layer, drawn from
    ``np.random.default_rng(SeedSequence([seed, n, m], spawn_key=(index,)))`` (so asking for more samples later
    extends the same sequence). Read-only and cached for the process.

    ``first``: how many distinct cells to draw before the rare second round, where the cells not drawn yet are
    taken in a random order until the graph connects (default: about twice what connects a random bipartite graph;
    tests make it small to force that round).
    """
    return null_rank_sets(n, m, seed, index + 1, first)[index]


def null_rank_sets(n: int, m: int, seed: int, samples: int, first: int | None = None) -> list[np.ndarray]:
    """:func:`null_ranks` of samples ``0 .. samples - 1``: those not simulated yet in this process are, side by
    side on the cores, once (callers asking for the same shape at the same time wait for one simulation)."""
    key = (int(n), int(m), int(seed), None if first is None else int(first))
    with _RANKS_LOCK:
        have = _RANKS.setdefault(key, [])
        _RANKS.move_to_end(key)
        todo = range(len(have), samples)
        if len(todo) > 1 and available_threads() > 1:
            have.extend(_simulations().map(lambda i: _null_ranks(*key[:3], i, key[3]), todo))
        else:
            have.extend(_null_ranks(*key[:3], i, key[3]) for i in todo)
        while len(_RANKS) > RANK_CACHE:
            _RANKS.popitem(last=False)
        return have[:samples]


#: Shapes (and seeds) whose rank sets the process keeps.
RANK_CACHE = 256
_RANKS: OrderedDict[tuple[int, int, int, int | None], list[np.ndarray]] = OrderedDict()
_RANKS_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _simulations() -> ThreadPoolExecutor:
    """Threads of their own (the walk releases the GIL): callers may be workers of the engine's pool."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=available_threads(), thread_name_prefix="neural-persistence-null")
    return _pool


def _null_ranks(n: int, m: int, seed: int, index: int, first: int | None) -> np.ndarray:
    total = n * m
    rng = np.random.default_rng(np.random.SeedSequence([seed, n, m], spawn_key=(index,)))
    parent = np.arange(n + m, dtype=np.int64)
    ranks = np.empty(n + m - 1, np.int64)
    state = np.zeros(2, np.int64)
    target = n + m - 1
    if total <= SMALL_LAYER:
        _walk(rng.permutation(total).astype(np.int64), n, m, parent, np.empty(0, np.uint8), 0, state, ranks)
    else:
        distinct = min(total // 4, first if first is not None else 2 * _wanted(n, m))
        seen = _bitmap(total)
        chunk = _wanted(n, m) if first is None else max(16, distinct // 2)
        drawn = []
        while state[1] < target and state[0] < distinct:
            drawn.append(rng.integers(0, total, chunk, dtype=np.int64))
            _walk(drawn[-1], n, m, parent, seen, distinct, state, ranks)
        if state[1] < target:  # the second round: every cell not drawn yet, in random order
            taken = np.unpackbits(seen[: total // 8 + 1], bitorder="little")[:total].astype(np.bool_)
            rest = rng.permutation(np.flatnonzero(~taken)).astype(np.int64)
            _walk(rest, n, m, parent, np.empty(0, np.uint8), 0, state, ranks)
        for cells in drawn:  # leave the bitmap clear for the next sample, touching only what was set
            seen[cells >> 3] = 0
    assert state[1] == target, "internal error: the null sample's graph did not connect"
    ranks.flags.writeable = False
    return ranks


_SCRATCH = threading.local()


def _bitmap(cells: int) -> np.ndarray:
    """A cleared bitmap of at least ``cells`` bits, this thread's own and reused (a fresh one costs a page fault
    per 4 KiB touched, more than the walk); whoever uses it clears the bits it set."""
    have = getattr(_SCRATCH, "bitmap", None)
    if have is None or have.shape[0] < cells // 8 + 1:
        have = _SCRATCH.bitmap = np.zeros(cells // 8 + 1, np.uint8)
    return have


def _histogram(bins: int) -> np.ndarray:
    """A zeroed histogram of this thread's own, reused (the kernel leaves it zeroed)."""
    if bins != 1 << 16:
        return np.zeros(bins, np.int64)
    have = getattr(_SCRATCH, "histogram", None)
    if have is None:
        have = _SCRATCH.histogram = np.zeros(bins, np.int64)
    return have


def ranks_needed(n: int, m: int, samples: int, seed: int) -> int:
    """How many of a layer's largest values the first ``samples`` null samples of its shape use."""
    if samples <= 0:
        return 0
    return max(int(r[-1]) + 1 for r in null_rank_sets(n, m, seed, samples))


def top_keys(keys: Keys, count: int) -> np.ndarray:
    """At least ``count`` of the largest keys of a layer (every key at or above a threshold, so ties at the
    threshold are all in), in descending order; all keys when ``count`` reaches the layer's size."""
    a = keys.data
    total = a.shape[0] * a.shape[1]
    key_dtype = np.dtype(f"u{a.dtype.itemsize}")
    if key_dtype.itemsize <= 2:  # bfloat16, float16, 8- and 16-bit integers: count, exactly, in one pass
        hist = _histogram(1 << (8 * key_dtype.itemsize))
        return _top_by_count(a, keys.mask, min(count, total), hist).astype(key_dtype, copy=False)
    if count >= total // 4:
        out = np.empty(total, dtype=key_dtype)
        _keys_at_least(a, keys.mask, key_dtype.type(0), out)
        return np.sort(out)[::-1]
    rng = np.random.default_rng(0)  # the threshold's sample decides only the work, never the answer
    sample = a[rng.integers(0, a.shape[0], SAMPLE), rng.integers(0, a.shape[1], SAMPLE)]
    sample = (np.abs(sample.astype(np.int64)) if a.dtype.kind == "i" else sample & keys.mask).astype(key_dtype)
    share = min(1.0, 1.3 * count / total + 4 * math.sqrt(count / total / SAMPLE))  # rarely too few
    while True:
        lo = np.quantile(sample, 1.0 - share, method="lower") if share < 1.0 else 0
        cap = int(min(total, max(3 * share * total, count) + 1024))
        out = np.empty(cap, dtype=key_dtype)
        found = _keys_at_least(a, keys.mask, key_dtype.type(lo), out)
        if found <= cap and (found >= count or lo == 0):
            return np.sort(out[:found], kind="stable")[::-1]
        if found > cap and np.quantile(sample, 1.0 - share / 2, method="lower") <= lo:
            # More keys tie at the threshold than the buffer holds and the sample offers no higher one (an
            # all-zero or constant layer, a frozen map): take every key at or above it rather than halve forever.
            out = np.empty(found, dtype=key_dtype)
            _keys_at_least(a, keys.mask, key_dtype.type(lo), out)
            return np.sort(out, kind="stable")[::-1]
        share = min(1.0, share * 4) if found < count else share / 2


def null_tree_keys(keys: Keys, samples: int, seed: int = 0, top: np.ndarray | None = None,
                   first: int | None = None) -> list[np.ndarray]:
    """:func:`null_tree_values` as keys (``keys.decode`` turns them into values): for storage that keeps keys."""
    n, m = keys.shape
    sets = null_rank_sets(n, m, seed, samples, first)
    need = max((int(r[-1]) + 1 for r in sets), default=0)
    if top is None or len(top) < need:
        top = top_keys(keys, need)
    return [top[r] for r in sets]


def null_tree_values(keys: Keys, samples: int, seed: int = 0, top: np.ndarray | None = None,
                     first: int | None = None) -> list[np.ndarray]:
    """Spanning-tree values (|w|, descending) of ``samples`` uniform random permutations of a layer's entries.

    Sample ``i`` follows :func:`null_ranks` of the layer's shape (as given), ``seed`` and ``i``: every layer of one
    shape shares the draws. ``top`` may pass the layer's largest keys in descending order (all keys at or above
    some threshold, as :func:`top_keys` or the engine's pass return them); more are read when they are too few.
    """
    return [keys.decode(k) for k in null_tree_keys(keys, samples, seed, top, first)]
