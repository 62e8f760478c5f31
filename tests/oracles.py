"""Slow, obviously correct implementations the fast engine is checked against."""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import minimum_spanning_tree


def abs_values(matrix: np.ndarray) -> np.ndarray:
    """|w| as float64, for any dtype the engine accepts (bfloat16 given as a torch tensor is converted by torch)."""
    if type(matrix).__module__.startswith("torch"):
        return matrix.detach().double().abs().numpy()
    return np.abs(np.asarray(matrix).astype(np.float64))


def kruskal_tree(matrix: np.ndarray) -> np.ndarray:
    """Maximum-spanning-tree values by sorting all edges and union-find (the textbook algorithm)."""
    w = abs_values(matrix)
    n, m = w.shape
    parent = list(range(n + m))

    def find(v: int) -> int:
        while parent[v] != v:
            v = parent[v]
        return v

    out = []
    for e in np.argsort(-w.ravel(), kind="stable"):
        i, j = divmod(int(e), m)
        a, b = find(i), find(n + j)
        if a != b:
            parent[a] = b
            out.append(w[i, j])
    return np.sort(np.array(out))[::-1]


def scipy_tree(matrix: np.ndarray) -> np.ndarray:
    """Maximum-spanning-tree values from scipy's minimum spanning tree on exact integer ranks."""
    w = abs_values(matrix)
    n, m = w.shape
    values = np.unique(w)[::-1]  # rank 1 = largest |w|
    ranks = np.searchsorted(-values, -w) + 1.0
    graph = np.zeros((n + m, n + m))
    graph[:n, n:] = ranks
    tree = minimum_spanning_tree(graph).toarray()
    picked = tree[tree > 0].astype(np.int64) - 1
    return np.sort(values[picked])[::-1]


def reference_np(matrix_list: list[np.ndarray], p: float = 2.0) -> tuple[list[float], list[float]]:
    """NP and normalized NP exactly as the reference defines them, from the Kruskal oracle."""
    w_max = max(abs_values(m).max() for m in matrix_list)
    nps, norms = [], []
    for m in matrix_list:
        deaths = kruskal_tree(m) / w_max
        deaths = deaths[deaths != 1.0]
        pers = np.append(1.0 - deaths, 1.0)
        value = float(np.sum(pers**p) ** (1 / p))
        nps.append(value)
        norms.append(value / (sum(m.shape) - 1) ** (1 / p))
    return nps, norms
