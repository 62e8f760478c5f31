"""How close is `compute` to the speed of reading the weights once?

For each matrix: the median time of ``npers.compute([matrix])``, the median time of one numba pass computing
max|w| over the same matrix in the same run (the floor for any exact method), and their ratio. The baseline is the
plain single-threaded pass (``max(abs(x))`` over the floats; over the bits with the sign cleared for bfloat16,
which numba has no type for); ``ratio_2t`` is against the same pass split over all cores, as ``compute`` is.
``max bits`` / ``ratio_b`` use the fastest single-threaded pass there is: an integer max over the bits with the
sign cleared, for every float dtype. scipy's minimum spanning tree (sort-based, like every general TDA library)
is timed on the two smaller sizes.

Run: ``make bench`` or ``python benchmarks/kernel.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

import neural_persistence as npers

SIZES = [(784, 650), (4096, 4096), (4096, 11008)]
STYLES = ["normal", "rounded", "int8", "row-scaled"]


@nb.njit(nogil=True, cache=True)
def max_abs_pass(a):  # type: ignore[no-untyped-def]
    best = abs(a[0, 0])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            best = max(best, abs(a[i, j]))
    return best


@nb.njit(nogil=True, cache=True)
def max_key_pass(keys, mask):  # type: ignore[no-untyped-def]
    """max|w| the fastest way: over the bits with the sign cleared (a SIMD integer max), as the engine reads."""
    best = keys[0, 0] & mask
    for i in range(keys.shape[0]):
        for j in range(keys.shape[1]):
            best = max(best, keys[i, j] & mask)
    return best


@nb.njit(nogil=True, cache=True)
def max_abs_bf16_pass(bits):  # type: ignore[no-untyped-def]
    best = np.uint16(0)
    for i in range(bits.shape[0]):
        for j in range(bits.shape[1]):
            best = max(best, np.uint16(bits[i, j] & np.uint16(0x7FFF)))
    return best


def make(shape: tuple[int, int], style: str, bf16: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    if style == "rounded":
        x = np.round(x, 2)
    elif style == "int8":
        x = np.round(x / np.abs(x).max() * 127).astype(np.int8)
    elif style == "row-scaled":
        x *= (10.0 ** rng.uniform(-3, 0, size=(shape[0], 1))).astype(np.float32)
    if bf16:
        x = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)  # truncate to bfloat16 bits
    return x


def median_time(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median of at least ``repeat`` calls after warm-up calls; fast calls are repeated for about 0.2 s."""
    fn()  # compiles or loads the kernels for this dtype
    t0 = time.perf_counter()
    fn()
    repeat = max(repeat, min(200, int(0.2 / max(time.perf_counter() - t0, 1e-6))))
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def baseline(x: np.ndarray, bf16: bool, pool: ThreadPoolExecutor | None) -> float:
    kernel = max_abs_bf16_pass if bf16 else max_abs_pass
    if pool is None:
        return median_time(lambda: kernel(x), 7)
    halves = np.array_split(np.arange(x.shape[0]), pool._max_workers)  # noqa: SLF001
    parts = [x[h[0] : h[-1] + 1] for h in halves]
    return median_time(lambda: list(pool.map(kernel, parts)), 7)


def bits_baseline(x: np.ndarray, bf16: bool) -> float:
    if x.dtype == np.int8:
        return baseline(x, False, None)  # |x| of int8 already vectorizes
    keys = x if bf16 else x.view(np.uint32)
    mask = keys.dtype.type(0x7FFF if bf16 else 0x7FFFFFFF)
    return median_time(lambda: max_key_pass(keys, mask), 7)


def layer(x: np.ndarray, bf16: bool) -> object:
    return npers.bfloat16_bits(x) if bf16 else x


def scipy_mst(x: np.ndarray) -> float:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    n, m = x.shape
    w = np.abs(x.astype(np.float64))
    t0 = time.perf_counter()
    rows = np.repeat(np.arange(n), m)
    cols = np.tile(np.arange(n, n + m), n)
    graph = csr_matrix(((w.max() + 1.0 - w).ravel(), (rows, cols)), shape=(n + m, n + m))
    minimum_spanning_tree(graph)
    return time.perf_counter() - t0


def peak_extra_memory_mb(shape: tuple[int, int], bf16: bool) -> float:
    """Peak RSS growth while `compute` runs on an existing matrix, measured in a fresh process whose kernels were
    compiled on a smaller matrix (so the engine's scratch buffers for this size count)."""
    code = f"""
import numpy as np, neural_persistence as npers, sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from kernel import make, layer
npers.compute([layer(make((1100, 1000), 'normal', {bf16}), {bf16})])  # compile and load the kernels
x = make({shape!r}, 'normal', {bf16})
def rss(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
open('/proc/self/clear_refs', 'w').write('5')
before = rss('VmRSS')
npers.compute([layer(x, {bf16})])
print(rss('VmHWM') - before)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the smallest and largest float32 cases")
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    pool = ThreadPoolExecutor(threads)
    print(f"{threads} threads; times in ms; ratio = compute / single-threaded max|w| pass")
    print(f"{'shape':>12} {'dtype':>8} {'input':>10} {'compute':>9} {'max|w|':>8} {'ratio':>6} "
          f"{'max|w| 2t':>9} {'ratio_2t':>8} {'max bits':>8} {'ratio_b':>7} {'scipy MST':>10}")
    cases = [(s, st, False) for s in SIZES for st in STYLES] + [(SIZES[-1], st, True) for st in STYLES]
    if args.quick:
        cases = [(SIZES[0], "normal", False), (SIZES[-1], "normal", False), (SIZES[-1], "normal", True)]
    for shape, style, bf16 in cases:
        x = make(shape, style, bf16)
        t_np = median_time(lambda: npers.compute([layer(x, bf16)]), 7)
        t_1 = baseline(x, bf16, None)
        t_2 = baseline(x, bf16, pool)
        t_b = bits_baseline(x, bf16)
        dtype = "bfloat16" if bf16 else ("int8" if x.dtype == np.int8 else "float32")
        scipy_t = f"{scipy_mst(x) * 1e3:10.0f}" if shape[0] * shape[1] <= 4096 * 4096 and not bf16 else f"{'':>10}"
        print(f"{f'{shape[0]}x{shape[1]}':>12} {dtype:>8} {style:>10} {t_np * 1e3:9.1f} {t_1 * 1e3:8.1f} "
              f"{t_np / t_1:6.2f} {t_2 * 1e3:9.1f} {t_np / t_2:8.2f} {t_b * 1e3:8.1f} {t_np / t_b:7.2f} {scipy_t}")
    for bf16 in (False, True):
        mb = peak_extra_memory_mb(SIZES[-1], bf16)
        print(f"peak extra memory, 4096x11008 {'bfloat16' if bf16 else 'float32'}: {mb:.1f} MB")


if __name__ == "__main__":
    main()
