"""From a layer's spanning-tree values to its diagram and neural persistence, in the reference's conventions.

Rieck et al., "Neural Persistence", ICLR 2019; reference code BorgwardtLab/Neural-Persistence (numbers from
Aleph). Conventions matched exactly:

* edge values are |w| / w_max; every vertex is born at 1, and each tree edge of value x gives the point (1, x);
* points on the diagonal (x == 1, i.e. |w| == w_max) are dropped;
* the component that never dies is the point (1, 0), persistence 1 (``essential=False`` leaves it out);
* NP = ||persistence||_p and normalized NP = NP / (n + m - 1)^(1/p). Because the essential point is counted,
  normalized NP can exceed 1 slightly (e.g. for a layer whose edges are all tiny); the reference does the same.
"""

from __future__ import annotations

import math

import numpy as np

from .results import PersistenceDiagram

__all__ = ["check_p", "diagram_from_tree", "normalized_np"]


def check_p(p: float) -> float:
    """``p`` as a float, or ValueError unless 1 <= p <= inf."""
    try:
        value = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"`p` must be a number >= 1 (or inf), got {p!r}") from None
    if not value >= 1.0:  # also catches NaN
        raise ValueError(f"`p` must be >= 1 (or inf), got {p}")
    return value


def diagram_from_tree(tree: np.ndarray, scale: float, essential: bool = True) -> PersistenceDiagram:
    """Persistence diagram of a layer from its raw maximum-spanning-tree values (descending) and w_max."""
    deaths = tree / scale
    deaths = deaths[deaths != 1.0]
    if essential:
        deaths = np.append(deaths, 0.0)
    return PersistenceDiagram(np.ones_like(deaths), deaths)


def normalized_np(value: float, shape: tuple[int, int], p: float) -> float:
    """NP divided by its upper bound, as the reference code does: (n + m - 1)^(1/p)."""
    n_edges = shape[0] + shape[1] - 1
    return value if math.isinf(p) else value / n_edges ** (1.0 / p)
