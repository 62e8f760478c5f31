"""The reference's way of counting a bias: one more input vertex."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["with_bias"]


def with_bias(weight: Any, bias: Any, layout: str = "out_in") -> np.ndarray:
    """Stack a layer's bias under its weights as an extra input row, shape ``(in + 1, out)``.

    The reference code (BorgwardtLab/Neural-Persistence) measures a dense layer with its bias as the matrix
    ``[[W], [b]]`` where W is (in, out): the bias behaves like the weights of a constant input unit.

    Parameters
    ----------
    weight
        The weight matrix; ``layout="out_in"`` for ``torch.nn.Linear`` (out, in), ``"in_out"`` for Keras or
        GPT-2 ``Conv1D`` (in, out).
    bias
        1-D, one entry per output.
    """
    w = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if layout not in ("out_in", "in_out"):
        raise ValueError(f"`layout` can be 'out_in' or 'in_out', got {layout!r}")
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D, got shape {w.shape}")
    w_in_out = w.T if layout == "out_in" else w
    if b.shape != (w_in_out.shape[1],):
        raise ValueError(f"bias must have shape ({w_in_out.shape[1]},) to match weight {w.shape} ({layout}), got {b.shape}")
    return np.vstack([w_in_out, b[None, :]])
