"""Convolutional layers: the unrolled graph, exactly or in closed form, or the kernel as a dense proxy.

A convolution on an input of a given size is a linear map between input positions (C_in x spatial) and output
positions (C_out x spatial'); unrolled, it is a bipartite graph whose edges repeat each filter tap once per
output position, and whose other entries are 0 (Rieck et al. 2019, Section 4.3). Three treatments:

``"exact"``
    The exact neural persistence of the unrolled layer, without building it: the taps are sorted once by |w|,
    then union-find adds each tap's shifted copies in that order. Time is linear in the number of unrolled
    edges; memory in the number of positions. The unrolled matrix's zero entries are the last edges; each one
    that joins two components is a tree edge of value 0.
``"approx"``
    Closed form. When receptive fields do not overlap (stride >= dilated kernel size), the unrolled graph is P
    disjoint copies (P = output positions) of the per-position block, which for ``groups = 1`` is the dense
    (C_out) x (C_in * k) kernel graph; the tree is then P copies of the kernel graph's tree, plus zero edges to
    join the copies. With overlap, copies share input vertices, so only the strongest of those P-fold values
    fit into the n + m - 1 edges of the tree: we keep the top n + m - 1 values, each tap group's tree repeated
    P times, and fill with zeros. Exact for non-overlapping fields; its error otherwise is tabulated in the tests.
``"kernel"``
    The (C_in/groups * k [+ 1 bias row], C_out) kernel as a dense matrix. A structural proxy that needs no input
    size; it is not the paper's unrolled graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np

from ..core.forest import find, union
from ..core.spanning_tree import TreeValues

__all__ = ["UnrolledConv", "conv_matrix"]


@dataclass(frozen=True)
class UnrolledConv:
    """A convolution on a given input size, measured as its unrolled bipartite graph without materialising it."""

    weight: np.ndarray  # (C_out, C_in / groups, k0, k1, k2), float64
    bias: np.ndarray | None
    in_spatial: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]
    dilation: tuple[int, int, int]
    groups: int
    mode: str = "exact"

    @property
    def out_spatial(self) -> tuple[int, int, int]:
        k = self.weight.shape[2:]
        return tuple(  # type: ignore[return-value]
            (i + 2 * p - d * (kk - 1) - 1) // s + 1
            for i, p, d, kk, s in zip(self.in_spatial, self.padding, self.dilation, k, self.stride)
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(input vertices [+ 1 bias vertex], output vertices) of the unrolled matrix."""
        c_out, c_in_g = self.weight.shape[:2]
        n_in = c_in_g * self.groups * math.prod(self.in_spatial) + (self.bias is not None)
        return n_in, c_out * math.prod(self.out_spatial)

    def spanning_tree(self) -> TreeValues:
        values = self._exact() if self.mode == "exact" else self._approx()
        max_abs = float(max(np.abs(self.weight).max(), np.abs(self.bias).max() if self.bias is not None else 0.0))
        return TreeValues(np.sort(values)[::-1], max_abs, self.shape)

    def _exact(self) -> np.ndarray:
        c_out, c_in_g = self.weight.shape[:2]
        co, ci, k0, k1, k2 = (a.ravel() for a in np.indices(self.weight.shape))
        ci = ci + (co // (c_out // self.groups)) * c_in_g
        taps = np.abs(self.weight).ravel()
        if self.bias is not None:  # the bias vertex: tap "input channel" -1 reaching every position of its filter
            taps = np.concatenate([taps, np.abs(self.bias)])
            co = np.concatenate([co, np.arange(c_out)])
            ci, k0, k1, k2 = (np.concatenate([a, np.full(c_out, f)]) for a, f in ((ci, -1), (k0, 0), (k1, 0), (k2, 0)))
        order = np.argsort(-taps, kind="stable")
        offsets = np.stack([k0, k1, k2], axis=1)[order].astype(np.int64)
        return _unrolled_tree(
            taps[order], co[order].astype(np.int64), ci[order].astype(np.int64), offsets,
            np.array(self.in_spatial, np.int64), np.array(self.out_spatial, np.int64), np.array(self.stride, np.int64),
            np.array(self.padding, np.int64), np.array(self.dilation, np.int64), c_in_g * self.groups, c_out,
            self.bias is not None,
        )

    def _approx(self) -> np.ndarray:
        from ..core.compute import layer_tree

        c_out, c_in_g = self.weight.shape[:2]
        per_group = c_out // self.groups
        values = []
        for g in range(self.groups):
            block = self.weight[g * per_group : (g + 1) * per_group].reshape(per_group, -1).T  # (C_in/g * k, C_out/g)
            if self.bias is not None:
                block = np.vstack([block, self.bias[None, g * per_group : (g + 1) * per_group]])
            values.append(layer_tree(block).values)
        n, m = self.shape
        repeated = np.repeat(np.sort(np.concatenate(values))[::-1], math.prod(self.out_spatial))[: n + m - 1]
        return np.concatenate([repeated, np.zeros(n + m - 1 - len(repeated))])


@nb.njit(cache=True, nogil=True)
def _unrolled_tree(taps, co, ci, offsets, in_sp, out_sp, stride, pad, dil, c_in, c_out, has_bias):  # type: ignore[no-untyped-def]
    n_in_pos = in_sp[0] * in_sp[1] * in_sp[2]
    n_out_pos = out_sp[0] * out_sp[1] * out_sp[2]
    bias_vertex = c_in * n_in_pos
    first_out = bias_vertex + (1 if has_bias else 0)
    n_vertices = first_out + c_out * n_out_pos
    parent = np.arange(n_vertices)
    size = np.ones(n_vertices, np.int64)
    out = np.zeros(n_vertices - 1)
    count = 0
    for t in range(len(taps)):
        if count == n_vertices - 1:
            break
        for o0 in range(out_sp[0]):
            i0 = o0 * stride[0] - pad[0] + offsets[t, 0] * dil[0]
            if ci[t] >= 0 and (i0 < 0 or i0 >= in_sp[0]):
                continue
            for o1 in range(out_sp[1]):
                i1 = o1 * stride[1] - pad[1] + offsets[t, 1] * dil[1]
                if ci[t] >= 0 and (i1 < 0 or i1 >= in_sp[1]):
                    continue
                for o2 in range(out_sp[2]):
                    i2 = o2 * stride[2] - pad[2] + offsets[t, 2] * dil[2]
                    if ci[t] >= 0 and (i2 < 0 or i2 >= in_sp[2]):
                        continue
                    u = bias_vertex if ci[t] < 0 else ci[t] * n_in_pos + (i0 * in_sp[1] + i1) * in_sp[2] + i2
                    v = first_out + co[t] * n_out_pos + (o0 * out_sp[1] + o1) * out_sp[2] + o2
                    if union(parent, size, u, v):
                        out[count] = taps[t]
                        count += 1
    return out  # the remaining entries stay 0: zero-valued edges of the unrolled matrix


def _triple(values: Sequence[int] | int, dims: int, fill: int) -> tuple[int, int, int]:
    vals = [values] * dims if isinstance(values, int) else list(values)
    return tuple(vals + [fill] * (3 - dims))  # type: ignore[return-value]


def conv_matrix(module: Any, name: str, mode: str, input_shape: Sequence[int] | None, bias: bool) -> Any:
    """What ``compute`` measures for a torch ``nn.Conv1d/2d/3d`` under ``mode``."""
    from .torch_modules import _in_out, _tensor

    weight = _tensor(module.weight, name)
    use_bias = bias and module.bias is not None
    if mode == "kernel":
        return _in_out(weight.reshape(weight.shape[0], -1), module.bias, "out_in", bias, name)
    if input_shape is None:
        raise ValueError(
            f"conv={mode!r} measures {name!r} unrolled over its input, so it needs the input size: pass "
            f"input_shape=(channels, *spatial) for one sample, or example_input=..., or use conv='kernel'"
        )
    if getattr(module, "padding_mode", "zeros") != "zeros":
        raise ValueError(f"{name!r}: conv={mode!r} supports zero padding only, got padding_mode={module.padding_mode!r}")
    dims = weight.ndim - 2
    k = list(weight.shape[2:])
    if isinstance(module.padding, str):  # "valid" or "same"
        totals = [0 if module.padding == "valid" else d * (kk - 1) for d, kk in zip(module.dilation, k)]
        if any(t % 2 for t in totals):
            raise ValueError(f"{name!r}: padding='same' with an even dilated kernel pads unevenly; not supported")
        padding = [t // 2 for t in totals]
    else:
        padding = list(module.padding)
    spatial = tuple(input_shape[-dims:])
    w = weight.double().numpy().reshape(*weight.shape[:2], *(k + [1] * (3 - dims)))
    return UnrolledConv(
        w, _tensor(module.bias, name).double().numpy() if use_bias else None,
        _triple(spatial, dims, 1), _triple(module.stride, dims, 1), _triple(padding, dims, 0),
        _triple(module.dilation, dims, 1), int(module.groups), mode,
    )
