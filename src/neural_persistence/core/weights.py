"""Turn a user's weight matrix into monotone integer keys without copying it.

For IEEE floats (float16, bfloat16, float32, float64) the bits with the sign bit cleared, read as an unsigned
integer, are ordered exactly like |w|: a layer is scanned as integers and only its n + m - 1 tree values are ever
converted back. Integers are read as |x|. Torch tensors are viewed through ``.numpy()``, never copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BFloat16Bits", "Keys", "as_array", "bfloat16_bits", "to_key_stack", "to_keys"]

_FLOAT_BITS = {2: np.uint16, 4: np.uint32, 8: np.uint64}


@dataclass(frozen=True)
class BFloat16Bits:
    """Raw bfloat16 bit patterns held in a ``uint16`` array (how numpy carries bfloat16 without extra packages)."""

    bits: np.ndarray


def bfloat16_bits(bits: Any) -> BFloat16Bits:
    """Mark a ``uint16``/``int16`` array as the raw bits of a bfloat16 matrix.

    Examples
    --------
    >>> raw = np.array([[0x3F80, 0xC000]], dtype=np.uint16)   # [[1.0, -2.0]] in bfloat16
    >>> npers.layer_diagram(npers.bfloat16_bits(raw)).deaths  # doctest: +SKIP
    """
    arr = np.asarray(bits)
    if arr.dtype.itemsize != 2 or arr.dtype.kind not in "ui":
        raise TypeError(f"bfloat16 bits must be a 16-bit integer array, got dtype {arr.dtype}")
    if not arr.dtype.isnative:  # bits stored big-endian: the patterns are read as native integers
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return BFloat16Bits(arr.view(np.uint16))


@dataclass(frozen=True)
class Keys:
    """A 2-D view of a layer (3-D: a stack of same-shaped layers) whose integer order is the order of |w|.

    ``data`` may be the transpose of the input (the graph of M and of M.T is the same), chosen so that rows are
    contiguous. ``float_dtype`` is set when ``data`` holds float bits, and tells how to decode a key. ``shape`` is
    the layer's shape as given (of one layer of a stack).
    """

    data: np.ndarray
    mask: Any
    float_dtype: str | None
    shape: tuple[int, int]
    transposed: bool = False

    def decode(self, keys: np.ndarray) -> np.ndarray:
        """Keys back to |w| as float64."""
        keys = np.asarray(keys, dtype=self.data.dtype if self.float_dtype else None)
        if self.float_dtype is None:
            return keys.astype(np.float64)
        if self.float_dtype == "bfloat16":
            return (keys.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return keys.view(np.dtype(self.float_dtype)).astype(np.float64)


_TORCH_DTYPES: set[Any] = set()  # the torch dtypes read as numpy arrays (filled when torch is first seen)


def _from_torch(x: Any, name: str) -> np.ndarray | BFloat16Bits:
    import torch  # only reached for torch tensors, so the core stays torch-free

    global _TORCH_DTYPES
    if not _TORCH_DTYPES:
        _TORCH_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                         torch.int16, torch.int8, torch.uint8, torch.bool}

    if x.is_sparse or x.layout != torch.strided:
        raise TypeError(f"layer {name!r}: sparse tensors are not supported; call .to_dense() first")
    if x.device.type == "meta":
        raise ValueError(f"layer {name!r} is on the meta device and holds no weights; load the model's weights first")
    if x.device.type != "cpu":
        x = x.detach().to("cpu")
    x = x.detach()
    if x.is_quantized:
        raise TypeError(f"layer {name!r}: quantized tensors are not supported; call .dequantize() first")
    if x.is_complex():
        raise TypeError(f"layer {name!r} has complex weights ({x.dtype}); neural persistence needs real weights")
    if x.dtype not in _TORCH_DTYPES:
        raise TypeError(f"layer {name!r} has dtype {x.dtype}, which numpy cannot read; convert it first (x.float())")
    if x.dtype == torch.bfloat16:
        return BFloat16Bits(x.view(torch.int16).numpy().view(np.uint16))
    return x.numpy()


def _is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


#: Strided matrices up to this size are copied (in their own dtype) before reading; bigger ones are read in place.
STRIDED_COPY_BYTES = 16 << 20


def to_keys(x: Any, name: str = "layer") -> Keys:
    """Validate a weight matrix and return its key view.

    Raises
    ------
    TypeError
        For complex, boolean, object or other non-numeric data.
    ValueError
        For anything that is not a non-empty 2-D matrix.
    """
    arr, bf16 = _numeric(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"layer {name!r} must be a 2-D weight matrix, got {arr.ndim}-D with shape {arr.shape}"
            + ("; reshape convolution kernels or pass the model itself" if arr.ndim > 2 else "")
        )
    _check_values(arr, name)
    shape = (int(arr.shape[0]), int(arr.shape[1]))
    transposed = not arr.flags.c_contiguous and arr.flags.f_contiguous
    if transposed:
        arr = arr.T  # same bipartite graph, contiguous rows
    elif not arr.flags.c_contiguous and arr.nbytes <= STRIDED_COPY_BYTES:
        # A strided slice (e.g. one attention head's columns) reads about twice as fast once contiguous, since
        # the kernels then vectorize; a copy in its own dtype is cheap at this size.
        arr = np.ascontiguousarray(arr)
    return _key_view(arr, bf16, shape, transposed)


def to_key_stack(x: Any, name: str = "layers") -> Keys:
    """Validate a stack of same-shaped matrices (``x[k]`` is one; attention heads) and return its key view, whose
    ``data`` is C-contiguous and 3-D and whose ``shape`` is that of one matrix."""
    arr, bf16 = _numeric(x, name)
    if arr.ndim != 3:
        raise ValueError(f"{name!r} must be a stack of 2-D weight matrices (3-D), got shape {arr.shape}")
    _check_values(arr, name)
    return _key_view(np.ascontiguousarray(arr), bf16, (int(arr.shape[1]), int(arr.shape[2])), False)


def as_array(x: Any, name: str = "layer") -> np.ndarray | BFloat16Bits:
    """``x`` as a numpy array, or :class:`BFloat16Bits` for bfloat16 (torch tensors viewed, not copied).

    Raises TypeError naming the layer for a masked array (its mask would be ignored) and ValueError for nested
    lists of unequal lengths."""
    if _is_torch(x):
        return _from_torch(x, name)
    if isinstance(x, BFloat16Bits):
        return x
    if np.ma.isMaskedArray(x):
        raise TypeError(f"layer {name!r} is a masked array, whose mask neural persistence would ignore; pass "
                        "x.filled(0) to measure masked weights as absent edges, or x.data to measure them all")
    try:
        return np.asarray(x)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"layer {name!r} cannot be read as a 2-D matrix ({err})") from None


def _numeric(x: Any, name: str) -> tuple[np.ndarray, bool]:
    """The array behind ``x`` (torch tensors and bfloat16 bits viewed, not copied) and whether it holds bfloat16.

    Data in the other byte order (``>f4`` on a little-endian machine) is converted once: the kernels compare
    the bit patterns as native integers."""
    x = as_array(x, name)
    bf16 = isinstance(x, BFloat16Bits)
    arr = x.bits if bf16 else x
    if not bf16 and arr.dtype.name == "bfloat16":  # ml_dtypes' bfloat16, as used by JAX
        arr, bf16 = arr.view(np.uint16), True
    if not arr.dtype.isnative and arr.dtype.kind in "fiu":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr, bf16


def _check_values(arr: np.ndarray, name: str) -> None:
    if arr.size == 0:
        raise ValueError(f"layer {name!r} is empty (shape {arr.shape}); a layer needs at least one weight")
    kind = arr.dtype.kind
    if kind == "c":
        raise TypeError(f"layer {name!r} has complex weights ({arr.dtype}); neural persistence needs real weights")
    if kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"layer {name!r} has unsupported dtype {arr.dtype}; use a float or integer array")
    if kind == "f" and arr.dtype.itemsize not in (2, 4, 8):
        raise TypeError(f"layer {name!r} has dtype {arr.dtype} ({8 * arr.dtype.itemsize} bits); use float16, "
                        "bfloat16, float32 or float64 (for example .astype(np.float64))")


def _key_view(arr: np.ndarray, bf16: bool, shape: tuple[int, int], transposed: bool) -> Keys:
    if bf16:
        return Keys(arr, np.uint16(0x7FFF), "bfloat16", shape, transposed)
    kind = arr.dtype.kind
    if kind == "f":
        bits: Any = _FLOAT_BITS[arr.dtype.itemsize]
        mask = bits(np.iinfo(bits).max >> 1)
        return Keys(arr.view(bits), mask, arr.dtype.name, shape, transposed)
    if kind == "u":
        return Keys(arr, arr.dtype.type(np.iinfo(arr.dtype).max), None, shape, transposed)
    return Keys(arr, arr.dtype.type(-1), None, shape, transposed)


def infinite_key(keys: Keys) -> int | None:
    """Smallest key that is inf or NaN (an all-ones exponent), or None for integer data."""
    if keys.float_dtype is None:
        return None
    if keys.float_dtype == "bfloat16":
        return 0x7F80
    return int(np.array(np.inf, dtype=keys.float_dtype).view(keys.data.dtype))
