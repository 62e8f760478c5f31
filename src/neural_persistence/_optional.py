"""Optional dependencies: import on first use, or say exactly what to install."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming the ``pip install`` command of our extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{module} is needed for this feature: pip install 'neural-persistence[{extra}]'"
        ) from err
