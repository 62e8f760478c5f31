"""The one family of result types every entry point returns."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .._optional import require

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LayerResult", "NetworkResult", "PersistenceDiagram"]


@dataclass(frozen=True)
class PersistenceDiagram:
    """0-dimensional persistence diagram of one layer: points ``(birth, death)``, deaths in descending order.

    Every vertex is born at 1 and dies at the normalized value of the edge that merges it; the essential class,
    when kept, is the point (1, 0).
    """

    births: np.ndarray
    deaths: np.ndarray

    @property
    def persistence(self) -> np.ndarray:
        """``birth - death`` of every point."""
        return self.births - self.deaths

    def __len__(self) -> int:
        return len(self.births)

    def norm(self, p: float = 2.0) -> float:
        """The p-norm of the persistence values, i.e. neural persistence (Rieck et al. 2019, Definition 2)."""
        pers = self.persistence
        if len(pers) == 0:
            return 0.0
        if np.isinf(p):
            return float(pers.max())
        if p == 2.0:  # not np.dot: BLAS would wake its threads, whose spinning slows the engine's
            return float(np.sqrt(np.sum(pers * pers)))
        return float(np.sum(pers**p) ** (1.0 / p))

    def to_frame(self) -> pd.DataFrame:
        """One row per point, columns ``birth``, ``death``, ``persistence``."""
        pd = require("pandas", "pandas")
        return pd.DataFrame({"birth": self.births, "death": self.deaths, "persistence": self.persistence})


@dataclass(frozen=True)
class LayerResult:
    """Neural persistence of one weight matrix.

    ``scale`` is the normalizer w_max the edge values were divided by; ``max_abs`` is this layer's own max |w|.
    ``info`` carries what a source knows about the matrix (role, block, head, ...), shown by ``to_frame``.
    """

    name: str
    shape: tuple[int, int]
    diagram: PersistenceDiagram
    np: float
    normalized_np: float
    p: float
    scale: float
    max_abs: float
    info: Mapping[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        """A flat dict, one table row."""
        return {
            "layer": self.name,
            **self.info,
            "rows": self.shape[0],
            "cols": self.shape[1],
            "np": self.np,
            "normalized_np": self.normalized_np,
            "n_points": len(self.diagram),
            "max_abs": self.max_abs,
            "scale": self.scale,
            "p": self.p,
        }


@dataclass(frozen=True)
class NetworkResult:
    """Neural persistence of every layer of a network, and the network's mean normalized NP."""

    layers: list[LayerResult]
    p: float
    normalization: str
    essential: bool

    @property
    def mean_normalized_np(self) -> float:
        """Mean of the layers' normalized NP (Rieck et al. 2019, Section 4.2)."""
        return float(np.mean([layer.normalized_np for layer in self.layers]))

    @property
    def np(self) -> NDArray[Any]:
        """NP of every layer, in order."""
        return np.array([layer.np for layer in self.layers])

    @property
    def normalized_np(self) -> NDArray[Any]:
        """Normalized NP of every layer, in order."""
        return np.array([layer.normalized_np for layer in self.layers])

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[LayerResult]:
        return iter(self.layers)

    def __getitem__(self, key: int | str) -> LayerResult:
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(f"no layer named {key!r}; layers are {[layer.name for layer in self.layers]}")
        return self.layers[key]

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: name, shape, NP, normalized NP, number of diagram points, scale."""
        pd = require("pandas", "pandas")
        return pd.DataFrame([layer.as_row() for layer in self.layers])

    def __repr__(self) -> str:
        return (
            f"NetworkResult({len(self.layers)} layers, p={self.p}, normalization={self.normalization!r}, "
            f"mean_normalized_np={self.mean_normalized_np:.6f})"
        )
