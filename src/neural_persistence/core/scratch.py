"""Scratch arrays that the engine reuses across calls, one set per thread.

Fresh memory costs a page fault per 4 KiB page on first touch (more inside a virtual machine), and a layer's
edge buffers are a few MB: allocated anew for every layer, the faults cost a quarter of reading the layer.
Models are measured layer after layer, so each thread keeps its buffers. Buffers larger than ``KEEP_BYTES`` are
not kept: for layers that big the faults are a small part of the work.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

__all__ = ["KEEP_BYTES", "scratch"]

KEEP_BYTES = 32 << 20

_local = threading.local()


def scratch(name: str, shape: int | tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype``; the same memory on the next call with ``name`` in this
    thread, so a caller must be done with it before asking again."""
    shape = (shape,) if isinstance(shape, int) else shape
    size = math.prod(shape)
    kept: dict[tuple[str, Any], np.ndarray] = _local.__dict__.setdefault("kept", {})
    buffer = kept.get((name, dtype))
    if buffer is None or buffer.size < size:
        buffer = np.empty(size, dtype)
        if buffer.nbytes <= KEEP_BYTES:
            kept[(name, dtype)] = buffer
    return buffer[:size].reshape(shape)
