"""``compute`` for everything a user holds: weight matrices, or a model whose matrices the sources plan.

The engine (:mod:`neural_persistence.core`) measures matrices; a ``torch.nn.Module`` is first turned into its
matrices by :func:`~neural_persistence.sources.torch_modules.module_matrices`, through the same planner that
checkpoint analysis uses (so NP logged during training equals the analysis of the saved checkpoint).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.compute import compute as compute_matrices
from .core.results import NetworkResult

__all__ = ["compute", "deep_graph_persistence"]


def compute(
    layers: Any,
    *,
    p: float = 2.0,
    normalization: str = "global",
    essential: bool = True,
    **source_options: Any,
) -> NetworkResult:
    """Neural persistence of every layer of a network (Rieck et al., ICLR 2019).

    Parameters
    ----------
    layers
        A list or dict of 2-D weight matrices (numpy arrays of any float or integer dtype and byte order, CPU
        torch tensors, :func:`bfloat16_bits`), or a ``torch.nn.Module`` (see :func:`layers_of` for what is
        measured).
    p, normalization, essential
        As in :func:`neural_persistence.core.compute.compute` (p-norm, ``"global"`` or ``"layer"`` w_max, the
        essential point counted).
    **source_options
        For a torch module: ``per_head``, ``include_embeddings``, ``bias`` (default False; True folds biases in
        as the paper does for plain MLPs), ``include``, ``exclude``, ``conv``, ``input_shape``,
        ``example_input``.

    Returns
    -------
    NetworkResult
        Per-layer diagram, NP and normalized NP; ``mean_normalized_np``; ``to_frame()``.

    Raises
    ------
    ValueError, TypeError
        As :func:`neural_persistence.core.compute.compute` (naming the layer); TypeError also for source options
        given with plain matrices.

    Examples
    --------
    >>> import numpy as np, neural_persistence as npers
    >>> rng = np.random.default_rng(0)
    >>> res = npers.compute([rng.normal(size=(784, 650)), rng.normal(size=(650, 10))])
    >>> round(res.mean_normalized_np, 3)  # doctest: +SKIP
    """
    if hasattr(layers, "named_modules"):  # a torch.nn.Module
        from .sources.torch_modules import module_matrices

        layers = module_matrices(layers, **source_options)
    elif source_options:
        raise TypeError(f"options {sorted(source_options)} only apply to torch modules, got {type(layers).__name__}")
    return compute_matrices(layers, p=p, normalization=normalization, essential=essential)


def deep_graph_persistence(layers: Any, p: float = 2.0, dtype: Any = None) -> Any:
    """Deep graph persistence (Girrbach et al., TMLR 2023) of an MLP: one diagram for the whole stack.

    ``layers``: weight matrices in forward order as ``nn.Linear`` stores them (outputs x inputs), or a torch
    module whose ``nn.Linear`` layers, in the order of ``named_modules``, form a chain (biases are not part of
    DGP). See :mod:`neural_persistence.core.dgp`; returns its ``DeepGraphPersistence`` (``np``,
    ``normalized_np``, ``diagram``, ``matrix``: the folded inputs x outputs matrix). ``dtype``: of the
    bottleneck products, float64 (default) or float32 (about twice as fast).
    """
    from .core.dgp import deep_graph_persistence as from_matrices

    if hasattr(layers, "named_modules"):
        import torch

        weights = [m.weight.detach().to(torch.float64).cpu().numpy() for _, m in layers.named_modules()
                   if isinstance(m, torch.nn.Linear)]
        if not weights:
            raise ValueError(f"{type(layers).__name__} has no nn.Linear layers")
        return from_matrices(weights, p, dtype or np.float64)
    return from_matrices(layers, p, dtype or np.float64)
