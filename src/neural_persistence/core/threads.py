"""How the engine uses the cores: numba's threads inside one big layer, a Python pool across small layers.

numba's OpenMP or TBB workers wait spinning between parallel regions, so the blocks of a layer start together.
Python threads woken for each layer were often put on the core that woke them (measured on 2-core virtual
machines: the two halves of a layer then ran one after the other, and a layer took 1.6x as long). numba's threads
are not used where they cannot be: in a process forked after OpenMP started (GNU OpenMP cannot run in the
child), and with numba's fallback 'workqueue' layer, which cannot run two parallel regions at once (calls then
take turns).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["available_threads", "parallel_call", "parallel_usable", "pool"]

_pool: ThreadPoolExecutor | None = None
_turns = threading.Lock()
_forked = False


def available_threads() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pool() -> ThreadPoolExecutor:
    """The process-wide pool that measures small layers side by side (the kernels release the GIL)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=available_threads(), thread_name_prefix="neural-persistence")
    return _pool


def parallel_usable() -> bool:
    """Whether numba's parallel kernels may run here: more than one core, and not in a forked child."""
    return available_threads() > 1 and not _forked


def parallel_call(kernel: Any, *args: Any) -> Any:
    """Call a ``parallel=True`` kernel; one call at a time unless numba's threading layer allows more."""
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet: the layer is chosen by this call
        layer = None
    if layer in ("omp", "tbb"):
        return kernel(*args)
    with _turns:
        return kernel(*args)


def _after_fork_in_child() -> None:
    global _forked, _pool
    _forked = True
    _pool = None  # the parent's threads do not exist in the child


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
