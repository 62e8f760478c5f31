"""Deep graph persistence (Girrbach et al., TMLR 2023): one persistence diagram for a whole stack of layers.

Why: per-layer NP mostly restates the spread of each layer's weights; DGP looks at paths through the network
instead. Each layer's weights are z-scored, their absolute values divided by the largest over all layers, and
consecutive layers are folded with the max-min (bottleneck) product

    S[i, k] = max_j min(S[i, j], W[j, k])

(the strength of the strongest path from input i to output k, a path as strong as its weakest edge) into one
inputs x outputs matrix, whose 0-dimensional persistence (the maximum spanning tree of its bipartite graph, with
the values as they are: already relative to the largest edge of the network) gives DGP's NP and normalized NP.

The product is a numba kernel over tiles in parallel: memory O(a c) for an (a x b) by (b x c) product, where
broadcasting min over (a, b, c) would need O(a b c); its time is a b c min-max steps, vectorized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
from numpy.typing import NDArray

from .compute import layer_tree
from .measures import check_p, diagram_from_tree, normalized_np
from .results import PersistenceDiagram

__all__ = ["DeepGraphPersistence", "bottleneck_product", "check_chain", "deep_graph_persistence", "fold",
           "folded_persistence", "scaled_layers"]


#: Tiles of the product: rows of ``a`` and columns of ``b`` per task, and the slice of the inner dimension whose
#: part of ``b`` (TILE_INNER x TILE_COLS) is copied into a contiguous buffer that stays in cache while the task's
#: rows pass over it (measured on 2 cores at 1B shapes: 20 G min-max steps/s in float64, 38 in float32; a tile
#: read in place from ``b`` reached 2-4).
TILE_ROWS = 128
TILE_COLS = 512
TILE_INNER = 128


@nb.njit(cache=True, nogil=True, fastmath=True)
def _max_min_tile(a, b, out, r0, r1, k0, k1):  # type: ignore[no-untyped-def]
    """One tile of :func:`_max_min`: ``out[r0:r1, k0:k1]``, accumulated in a local buffer."""
    inner = a.shape[1]
    width = k1 - k0
    acc = np.zeros((r1 - r0, width), a.dtype)
    part = np.empty((TILE_INNER, width), a.dtype)
    for j0 in range(0, inner, TILE_INNER):
        j1 = min(inner, j0 + TILE_INNER)
        for j in range(j0, j1):
            for k in range(width):
                part[j - j0, k] = b[j, k0 + k]
        for i in range(r0, r1):
            row = acc[i - r0]
            for j in range(j0, j1):
                aij = a[i, j]
                if aij <= 0.0:
                    continue
                bj = part[j - j0]
                for k in range(width):
                    row[k] = max(row[k], min(bj[k], aij))
    for i in range(r0, r1):
        for k in range(width):
            out[i, k0 + k] = acc[i - r0, k]


@nb.njit(cache=True, nogil=True, parallel=True)
def _max_min(a, b, out):  # type: ignore[no-untyped-def]
    """``out[i, k] = max_j min(a[i, j], b[j, k])`` (finite non-negative inputs), tile by tile in parallel: each
    task owns a tile of ``out``; the innermost loop is a plain vectorized min and max along a row."""
    rows = a.shape[0]
    cols = b.shape[1]
    row_tiles = (rows + TILE_ROWS - 1) // TILE_ROWS
    col_tiles = (cols + TILE_COLS - 1) // TILE_COLS
    for task in nb.prange(row_tiles * col_tiles):
        r0 = (task // col_tiles) * TILE_ROWS
        k0 = (task % col_tiles) * TILE_COLS
        _max_min_tile(a, b, out, r0, min(rows, r0 + TILE_ROWS), k0, min(cols, k0 + TILE_COLS))


def bottleneck_product(a: np.ndarray, b: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """``out[i, k] = max_j min(a[i, j], b[j, k])`` for non-negative ``a`` (n x m) and ``b`` (m x c).

    ``dtype``: of the computation and the result (float64, or float32 at twice the speed: every entry of the
    result is an entry of ``a`` or ``b``, so float32 only rounds the inputs)."""
    a = np.ascontiguousarray(a, dtype=dtype)
    b = np.ascontiguousarray(b, dtype=dtype)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot chain a {a.shape} matrix into a {b.shape} one: the inner sizes must agree")
    if (a < 0).any() or (b < 0).any() or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the bottleneck product takes finite non-negative matrices (absolute values)")
    out = np.empty((a.shape[0], b.shape[1]), dtype=dtype)
    _max_min(a, b, out)
    return out


def scaled_layers(layers: Sequence[np.ndarray], dtype: Any = np.float64) -> list[np.ndarray]:
    """DGP's preprocessing: each layer z-scored, absolute values, all divided by the largest over the layers.

    ``dtype``: of the result (means and standard deviations are always accumulated in float64)."""
    scaled = []
    for index, w in enumerate(layers):
        w = np.asarray(w, dtype=dtype)
        mean = w.mean(dtype=np.float64)
        std = float(np.sqrt(np.mean(np.square(w - mean, dtype=np.float64))))  # two passes: no cancellation
        if not np.isfinite(std):
            raise ValueError(f"layer {index} holds NaN or infinite weights")
        if std == 0:
            raise ValueError(f"layer {index} is constant: its z-scores are undefined")
        z = w - w.dtype.type(mean)
        np.abs(z, out=z)
        z /= w.dtype.type(std)
        scaled.append(z)
    largest = max(float(s.max()) for s in scaled)
    for s in scaled:
        s /= s.dtype.type(largest)
    return scaled


@dataclass(frozen=True)
class DeepGraphPersistence:
    """DGP of a stack: NP of the folded matrix (``matrix``: inputs x outputs), its normalized value and
    diagram."""

    np: float
    normalized_np: float
    diagram: PersistenceDiagram
    matrix: NDArray[Any]
    p: float


def check_chain(layers: Sequence[np.ndarray]) -> None:
    """Raise ValueError unless each layer's outputs are the next one's inputs (``nn.Linear`` orientation)."""
    if not layers:
        raise ValueError("no layers given")
    for index, (w, nxt) in enumerate(zip(layers, layers[1:])):
        if w.ndim != 2 or nxt.ndim != 2 or w.shape[0] != nxt.shape[1]:
            raise ValueError(f"layer {index} has shape {w.shape} (outputs x inputs) but layer {index + 1} has "
                             f"{nxt.shape}: not a chain")


def fold(scaled: Sequence[np.ndarray], dtype: Any = np.float64) -> np.ndarray:
    """The bottleneck product of a chain of scaled layers (``nn.Linear`` orientation): inputs x outputs."""
    check_chain(scaled)
    folded = np.ascontiguousarray(scaled[0].T, dtype=dtype)
    for nxt in scaled[1:]:
        folded = bottleneck_product(folded, nxt.T, dtype)
    return folded


def folded_persistence(folded: np.ndarray, p: float = 2.0) -> DeepGraphPersistence:
    """NP of a folded matrix whose values are already relative to the network's largest edge (scale 1)."""
    p = check_p(p)
    tree = layer_tree(folded)
    diagram = diagram_from_tree(tree.values, 1.0)
    value = diagram.norm(p)
    return DeepGraphPersistence(value, normalized_np(value, folded.shape, p), diagram, folded, p)


def deep_graph_persistence(layers: Any, p: float = 2.0, dtype: Any = np.float64) -> DeepGraphPersistence:
    """Deep graph persistence of an MLP stack.

    Parameters
    ----------
    layers
        The weight matrices in forward order, each as ``nn.Linear`` stores it (outputs x inputs), so that layer
        ``l + 1``'s inputs are layer ``l``'s outputs (``neural_persistence.deep_graph_persistence`` also takes a
        torch module).
    p
        Order of the norm.
    dtype
        Of the bottleneck products: float64, or float32 (about twice as fast; rounds the scaled weights only).
    """
    p = check_p(p)
    matrices = [np.asarray(w) for w in layers]
    check_chain(matrices)
    return folded_persistence(fold(scaled_layers(matrices, dtype), dtype), p)
