"""Deep graph persistence (Girrbach et al., TMLR 2023): one persistence diagram for a whole stack of layers.

Why: per-layer NP mostly restates the spread of each layer's weights; DGP looks at paths through the network
instead. Each layer's weights are z-scored, their absolute values divided by the largest over all layers, and
consecutive layers are folded with the max-min (bottleneck) product

    S[i, k] = max_j min(S[i, j], W[j, k])

(the strength of the strongest path from input i to output k, a path as strong as its weakest edge) into one
inputs x outputs matrix, whose 0-dimensional persistence (the maximum spanning tree of its bipartite graph, with
the values as they are: already relative to the largest edge of the network) gives DGP's NP and normalized NP.

The product is a numba kernel over blocks of rows in parallel: memory O(a c) for an (a x b) by (b x c) product,
where broadcasting min over (a, b, c) would need O(a b c).
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

__all__ = ["DeepGraphPersistence", "bottleneck_product", "deep_graph_persistence", "scaled_layers"]


@nb.njit(cache=True, nogil=True, parallel=True)
def _max_min(a, b, out):  # type: ignore[no-untyped-def]
    rows, inner = a.shape
    cols = b.shape[1]
    for i in nb.prange(rows):
        best = out[i]
        for k in range(cols):
            best[k] = 0.0
        for j in range(inner):
            aij = a[i, j]
            if aij <= 0.0:
                continue
            bj = b[j]
            for k in range(cols):
                v = bj[k] if bj[k] < aij else aij
                if v > best[k]:
                    best[k] = v


def bottleneck_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out[i, k] = max_j min(a[i, j], b[j, k])`` for non-negative ``a`` (n x m) and ``b`` (m x c), as float64."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot chain a {a.shape} matrix into a {b.shape} one: the inner sizes must agree")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("the bottleneck product takes non-negative matrices (absolute values)")
    out = np.empty((a.shape[0], b.shape[1]))
    _max_min(a, b, out)
    return out


def scaled_layers(layers: Sequence[np.ndarray]) -> list[np.ndarray]:
    """DGP's preprocessing: each layer z-scored, absolute values, all divided by the largest over the layers."""
    scaled = []
    for index, w in enumerate(layers):
        w = np.asarray(w, dtype=np.float64)
        std = float(w.std())
        if not np.isfinite(w).all():
            raise ValueError(f"layer {index} holds NaN or infinite weights")
        if std == 0:
            raise ValueError(f"layer {index} is constant: its z-scores are undefined")
        scaled.append(np.abs((w - w.mean()) / std))
    largest = max(float(s.max()) for s in scaled)
    return [s / largest for s in scaled]


@dataclass(frozen=True)
class DeepGraphPersistence:
    """DGP of a stack: NP of the folded matrix (``matrix``: inputs x outputs), its normalized value and
    diagram."""

    np: float
    normalized_np: float
    diagram: PersistenceDiagram
    matrix: NDArray[Any]
    p: float


def deep_graph_persistence(layers: Any, p: float = 2.0) -> DeepGraphPersistence:
    """Deep graph persistence of an MLP stack.

    Parameters
    ----------
    layers
        The weight matrices in forward order, each as ``nn.Linear`` stores it (outputs x inputs), so that layer
        ``l + 1``'s inputs are layer ``l``'s outputs (``neural_persistence.deep_graph_persistence`` also takes a
        torch module).
    p
        Order of the norm.
    """
    p = check_p(p)
    matrices = [np.asarray(w) for w in layers]
    if not matrices:
        raise ValueError("no layers given")
    for index, (w, nxt) in enumerate(zip(matrices, matrices[1:])):
        if np.asarray(w).shape[0] != np.asarray(nxt).shape[1]:
            raise ValueError(f"layer {index} has {np.asarray(w).shape[0]} outputs but layer {index + 1} takes "
                             f"{np.asarray(nxt).shape[1]} inputs: not a chain")
    scaled = [s.T for s in scaled_layers(matrices)]  # inputs x outputs, so that products chain left to right
    folded = scaled[0]
    for nxt in scaled[1:]:
        folded = bottleneck_product(folded, nxt)
    tree = layer_tree(folded)
    diagram = diagram_from_tree(tree.values, 1.0)  # values are already relative to the network's largest edge
    value = diagram.norm(p)
    return DeepGraphPersistence(value, normalized_np(value, folded.shape, p), diagram, folded, p)

