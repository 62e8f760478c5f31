"""``compute``: neural persistence of a list or dict of weight matrices, layers read in parallel threads.

The engine knows matrices only; models (``torch.nn.Module``) are turned into matrices by
:mod:`neural_persistence.sources` (``neural_persistence.compute`` accepts both)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .measures import check_p, diagram_from_tree, normalized_np
from .results import LayerResult, NetworkResult, PersistenceDiagram
from .spanning_tree import TreeValues, tree_values
from .threads import available_threads, parallel_usable, pool
from .weights import Keys, to_keys

__all__ = ["NORMALIZATIONS", "NamedMatrix", "compute", "layer_diagram", "layer_tree", "named_matrices"]

NORMALIZATIONS = ("global", "layer")
#: Layers with at least this many weights are split across all threads; smaller ones run one per thread.
SPLIT_LAYER = 1 << 20

@dataclass(frozen=True)
class NamedMatrix:
    """A matrix to measure, its name, and what its source knows about it (role, block, head, ...)."""

    name: str
    matrix: Any
    info: Mapping[str, Any] = field(default_factory=dict)


def named_matrices(layers: Any) -> list[NamedMatrix]:
    """The matrices ``compute`` would measure, named: ``layer_0``, ... for a sequence, the keys of a mapping."""
    if hasattr(layers, "named_modules"):
        raise TypeError("a torch module is measured by neural_persistence.compute (through its sources); "
                        "neural_persistence.core.compute takes a list or dict of matrices")
    if isinstance(layers, NamedMatrix):
        return [layers]
    if isinstance(layers, Mapping):
        items = [NamedMatrix(str(k), v) for k, v in layers.items()]
    elif isinstance(layers, np.ndarray) or not isinstance(layers, Iterable):
        raise TypeError(
            f"`layers` must be a list or dict of 2-D weight matrices (or a torch module), got {type(layers).__name__}"
            "; for a single matrix use layer_diagram(matrix) or compute([matrix])"
        )
    else:
        items = [x if isinstance(x, NamedMatrix) else NamedMatrix(f"layer_{i}", x) for i, x in enumerate(layers)]
    if not items:
        raise ValueError("no layers given: pass at least one 2-D weight matrix")
    return items


def layer_tree(matrix: Any, name: str = "layer", parallel: bool = True, at_least: int = 0) -> TreeValues:
    """Raw maximum-spanning-tree values (|w|, descending) and max |w| of one matrix (or its :class:`Keys`).

    The tree values are scale-invariant: dividing them by any w_max gives the layer's diagram under that
    normalization, which is how checkpoint analysis normalizes globally after one pass over the weights.
    ``parallel=False`` reads even a big matrix on one thread, for callers that measure matrices side by side.
    ``at_least``: also return (as ``top``) about this many of the largest keys, from the same pass (the null model's
    input).
    """
    keys = matrix if isinstance(matrix, Keys) else to_keys(matrix, name)
    return _tree(keys, name, split=parallel and keys.data.size >= SPLIT_LAYER, at_least=at_least)


def _tree(keys: Keys, name: str, split: bool, at_least: int = 0) -> TreeValues:
    if split and parallel_usable():
        return tree_values(keys, blocks=available_threads(), name=name, at_least=at_least)
    return tree_values(keys, name=name, at_least=at_least)


def layer_diagram(matrix: Any, scale: float | None = None, essential: bool = True) -> PersistenceDiagram:
    """Persistence diagram of one weight matrix.

    Parameters
    ----------
    matrix
        2-D weights (numpy array, torch tensor, or :func:`bfloat16_bits`).
    scale
        The normalizer w_max; default: this matrix's own max |w|.
    essential
        Keep the essential point (1, 0), as the reference code does.
    """
    tree = layer_tree(matrix)
    w_max = tree.max_abs if scale is None else float(scale)
    if not w_max > 0:
        raise ValueError(f"the normalizer must be positive, got {w_max} (is every weight zero?)")
    if not np.isfinite(w_max) or w_max < tree.max_abs:
        raise ValueError(f"`scale` must be finite and at least the matrix's max |w| ({tree.max_abs}), got {w_max}: "
                         "the diagram's deaths must lie in [0, 1]")
    return diagram_from_tree(tree.values, w_max, essential)


def compute(
    layers: Any,
    *,
    p: float = 2.0,
    normalization: str = "global",
    essential: bool = True,
) -> NetworkResult:
    """Neural persistence of every layer of a network (Rieck et al., ICLR 2019).

    Parameters
    ----------
    layers
        A list or dict of 2-D weight matrices (numpy arrays of any float or integer dtype, CPU torch tensors,
        :func:`bfloat16_bits`), or :class:`NamedMatrix` records.
    p
        Order of the norm over the persistence diagram, 1 <= p <= inf.
    normalization
        ``"global"``: edge values |w| / w_max with w_max over all layers passed in (the paper's choice);
        ``"layer"``: each layer divided by its own max |w|.
    essential
        Count the essential point (1, 0), as the reference code does; ``False`` gives the textbook definition.

    Returns
    -------
    NetworkResult
        Per-layer diagram, NP and normalized NP; ``mean_normalized_np``; ``to_frame()``.

    Raises
    ------
    ValueError
        For NaN or infinite weights, non-2-D or empty matrices, an all-zero network, ``p < 1``, or an unknown
        ``normalization``; the message names the layer.

    Examples
    --------
    >>> import numpy as np, neural_persistence as npers
    >>> rng = np.random.default_rng(0)
    >>> res = npers.compute([rng.normal(size=(784, 650)), rng.normal(size=(650, 10))])
    >>> round(res.mean_normalized_np, 3)  # doctest: +SKIP
    """
    p = check_p(p)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` can be one of {NORMALIZATIONS}, got {normalization!r}")
    items = named_matrices(layers)
    trees = _trees(items)
    if normalization == "global":
        w_max = max(t.max_abs for t in trees)
        if w_max == 0:
            raise ValueError("every weight of the network is zero (w_max = 0): neural persistence is undefined")
    else:
        for item, t in zip(items, trees):
            if t.max_abs == 0:
                raise ValueError(f"layer {item.name!r} is all zeros: layer normalization is undefined")
    results = []
    for item, tree in zip(items, trees):
        scale = w_max if normalization == "global" else tree.max_abs
        diagram = diagram_from_tree(tree.values, scale, essential)
        value = diagram.norm(p)
        results.append(
            LayerResult(
                item.name, tree.shape, diagram, value, normalized_np(value, tree.shape, p), p, scale,
                tree.max_abs, dict(item.info),
            )
        )
    return NetworkResult(results, p, normalization, essential)


def _trees(items: list[NamedMatrix]) -> list[TreeValues]:
    """Small layers run one per thread; big ones are split across all threads, one after another.

    A source that knows its tree without a matrix (an unrolled convolution) provides ``spanning_tree()``.
    """
    keys = [None if hasattr(item.matrix, "spanning_tree") else to_keys(item.matrix, item.name) for item in items]
    small: dict[int, Future[TreeValues]] = {}
    if available_threads() > 1 and len(items) > 1:
        for i, k in enumerate(keys):
            if k is None:
                small[i] = pool().submit(items[i].matrix.spanning_tree)
            elif k.data.size < SPLIT_LAYER:
                small[i] = pool().submit(tree_values, k, 1, items[i].name)
    out = []
    for i, k in enumerate(keys):
        if i in small:
            out.append(small[i].result())
        elif k is None:
            out.append(items[i].matrix.spanning_tree())
        else:
            out.append(_tree(k, items[i].name, split=k.data.size >= SPLIT_LAYER))
    return out
