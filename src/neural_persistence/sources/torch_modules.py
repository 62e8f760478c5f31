"""PyTorch models in, named weight matrices out, in the reference's layout.

Every measured matrix is (inputs, outputs), the bias (when kept) an extra input row, as in the reference code:
``nn.Linear`` weights (out, in) are transposed views, Hugging Face ``Conv1D`` (GPT-2) weights are already
(in, out). ``nn.MultiheadAttention`` is split into its query, key and value maps; its ``out_proj`` is a Linear.
Convolutions are handled by :mod:`neural_persistence.sources.conv`. Everything else that holds parameters is
listed as skipped, with the reason.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._optional import require
from ..core.compute import NamedMatrix

__all__ = ["LayerEntry", "layers_of", "module_matrices"]

_NORMS = ("Norm", "BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm")


@dataclass(frozen=True)
class LayerEntry:
    """One module of a model as ``layers_of`` sees it: measured (with its matrix shape) or skipped (with why)."""

    name: str
    module_type: str
    shape: tuple[int, ...] | None
    measured: bool
    reason: str = ""


def _tensor(x: Any, name: str) -> Any:
    """A CPU tensor, or a clear error for data that cannot be read."""
    if x.device.type == "meta":
        raise ValueError(f"{name!r} is on the meta device and holds no weights; load the model's weights first")
    if x.layout != require("torch", "torch").strided:
        raise TypeError(f"{name!r} has sparse weights; call .to_dense() on the module first")
    return x.detach().cpu() if x.device.type != "cpu" else x.detach()


def _in_out(weight: Any, bias: Any, layout: str, use_bias: bool, name: str) -> Any:
    """The (in[+1], out) matrix: a view when there is no bias, a float64 copy with the bias row otherwise."""
    w = _tensor(weight, name)
    if w.ndim != 2:
        raise ValueError(f"{name!r}: expected a 2-D weight, got shape {tuple(w.shape)}")
    w = w.T if layout == "out_in" else w
    if bias is None or not use_bias:
        return w
    torch = require("torch", "torch")
    b = _tensor(bias, name)
    return torch.cat([w.to(torch.float64), b.to(torch.float64)[None, :]]).numpy()


def _matches(name: str, patterns: Sequence[str] | str | None) -> bool:
    if patterns is None:
        return False
    patterns = [patterns] if isinstance(patterns, str) else patterns
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _is_quantized(module: Any) -> bool:
    return "quantized" in type(module).__module__ or hasattr(module, "_packed_params")


def _walk(model: Any, bias: bool, conv: str, input_shapes: dict[str, tuple[int, ...]] | None) -> Iterable[tuple]:
    """(entry, matrix or None) for every module with parameters of its own, in registration order."""
    nn = require("torch", "torch").nn
    from .conv import conv_matrix

    for name, module in model.named_modules():
        kind = type(module).__name__
        own = dict(module.named_parameters(recurse=False))
        if _is_quantized(module):
            raise TypeError(f"module {name!r} ({kind}) is quantized; dequantize the model (or measure a float copy)")
        if isinstance(module, nn.MultiheadAttention):
            yield from _attention(name, module, bias)
            continue
        if isinstance(module, nn.Linear):
            mat = _in_out(module.weight, module.bias, "out_in", bias, name)
            yield LayerEntry(name, kind, tuple(mat.shape), True), mat
        elif kind == "Conv1D" and hasattr(module, "nf"):  # Hugging Face GPT-2 style, weight (in, out)
            mat = _in_out(module.weight, module.bias, "in_out", bias, name)
            yield LayerEntry(name, kind, tuple(mat.shape), True), mat
        elif isinstance(module, nn.modules.conv._ConvNd):
            shape_in = (input_shapes or {}).get(name)
            mat = conv_matrix(module, name, mode=conv, input_shape=shape_in, bias=bias)
            yield LayerEntry(name, kind, tuple(mat.shape), True), mat
        elif own:
            yield LayerEntry(name, kind, None, False, _skip_reason(module, own)), None


def _attention(name: str, module: Any, bias: bool) -> Iterable[tuple]:
    kind = type(module).__name__
    e = module.embed_dim
    if module.in_proj_weight is not None:
        weights = [module.in_proj_weight[i * e : (i + 1) * e] for i in range(3)]
    else:
        weights = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
    biases = [None] * 3 if module.in_proj_bias is None else [module.in_proj_bias[i * e : (i + 1) * e] for i in range(3)]
    for part, w, b in zip("qkv", weights, biases):
        full = f"{name}.{part}" if name else part
        mat = _in_out(w, b, "out_in", bias, full)
        yield LayerEntry(full, kind, tuple(mat.shape), True), mat


def _skip_reason(module: Any, own: dict[str, Any]) -> str:
    kind = type(module).__name__
    if "Embedding" in kind:
        return "embedding: a lookup table, not a map between layers"
    if any(n in kind for n in _NORMS):
        return "normalization: 1-D scale and shift"
    if all(p.ndim <= 1 for p in own.values()):
        return "only 1-D parameters"
    return f"no rule for {kind}; parameters {sorted(own)}"


def _record_input_shapes(model: Any, example_input: Any) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Run one forward pass: the input size of every convolution, and the order modules are called in."""
    torch = require("torch", "torch")
    shapes: dict[str, tuple[int, ...]] = {}
    order: list[str] = []
    names = {id(m): n for n, m in model.named_modules()}
    handles = []

    def hook(module: Any, args: tuple) -> None:
        name = names[id(module)]
        order.append(name)
        if args and hasattr(args[0], "shape"):
            shapes[name] = tuple(int(s) for s in args[0].shape[1:])

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
    return shapes, order


def _entries(
    model: Any,
    bias: bool = True,
    include: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    conv: str = "kernel",
    input_shape: Sequence[int] | None = None,
    example_input: Any = None,
) -> list[tuple[LayerEntry, Any]]:
    if conv not in ("kernel", "exact", "approx"):
        raise ValueError(f"`conv` can be 'kernel', 'exact' or 'approx', got {conv!r}")
    shapes = order = None
    if input_shape is not None and example_input is None:
        torch = require("torch", "torch")
        param = next(model.parameters())
        example_input = torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device)
    if example_input is not None:
        shapes, order = _record_input_shapes(model, example_input)
    pairs = []
    for entry, mat in _walk(model, bias, conv, shapes):
        if include is not None and not _matches(entry.name, include):
            entry, mat = LayerEntry(entry.name, entry.module_type, entry.shape, False, "not matched by include"), None
        elif _matches(entry.name, exclude):
            entry, mat = LayerEntry(entry.name, entry.module_type, entry.shape, False, "matched by exclude"), None
        pairs.append((entry, mat))
    if order:  # forward order where a pass was run; modules never called keep their place at the end
        rank = {n: i for i, n in reversed(list(enumerate(order)))}
        pairs.sort(key=lambda em: rank.get(_module_of(em[0]), len(order)))
    return pairs


def _module_of(entry: LayerEntry) -> str:
    """The module an entry comes from (attention maps are named ``<module>.q`` and so on)."""
    if entry.module_type != "MultiheadAttention":
        return entry.name
    return entry.name.rsplit(".", 1)[0] if "." in entry.name else ""


def layers_of(model: Any, **options: Any) -> list[LayerEntry]:
    """What ``compute(model, **options)`` would measure, and what it skips and why, without computing.

    Options: ``bias`` (default True: the bias is one more input vertex, as in the reference),
    ``include`` / ``exclude`` (glob patterns on module names), ``conv`` (``"kernel"``, ``"exact"`` or
    ``"approx"``), ``input_shape`` (one sample's shape, without the batch dimension) or ``example_input``.
    """
    return [entry for entry, _ in _entries(model, **options)]


def module_matrices(model: Any, **options: Any) -> list[NamedMatrix]:
    """The matrices of a torch model that ``compute`` measures, with their module type in ``info``."""
    pairs = _entries(model, **options)
    measured = [NamedMatrix(e.name, m, {"module": e.module_type}) for e, m in pairs if e.measured]
    if not measured:
        found = sorted({type(m).__name__ for m in model.modules()} - {type(model).__name__}) or [type(model).__name__]
        filtered = any(e.reason in ("not matched by include", "matched by exclude") for e, _ in pairs)
        raise ValueError(
            f"{type(model).__name__} has no measurable layer (Linear, Conv1D, MultiheadAttention, Conv1d/2d/3d)"
            + (" left after include/exclude" if filtered else "")
            + f"; found module types {found}"
        )
    return measured
