"""PyTorch models in, named weight matrices out, planned as checkpoints are.

A live model's measurable tensors (``nn.Linear`` and Hugging Face ``Conv1D`` weights, ``nn.MultiheadAttention``'s
fused input projection, routers and the 3-D expert tensors of transformers 5's mixture-of-experts modules,
embeddings on request) go, by their ``state_dict`` names, through the same planner as a saved checkpoint
(:mod:`~neural_persistence.sources.plan`): roles, fused q/k/v and gate/up splits, heads (``per_head``, with the
head counts of a transformers model's ``config``), experts and exclusions (embeddings and the LM head unless
``include_embeddings``) are decided in one place. So ``compute(model)`` during training equals the analysis of the
checkpoint saved from it. Matrices are in ``nn.Linear``'s (out, in) orientation.

``bias=True`` is the paper's convention for plain MLPs (Rieck et al. 2019, as the reference code does): a dense
layer with bias is measured as ``[[W], [b]]`` with W as (in, out), the bias an extra input vertex. Checkpoint
analysis never folds biases in, so leave it off (the default) to compare with a checkpoint.

Convolutions are handled by :mod:`neural_persistence.sources.conv`. Everything else that holds parameters is
listed as skipped, with the reason.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .._optional import require
from ..core.compute import NamedMatrix
from ..core.weights import BFloat16Bits, as_array
from .plan import PlanOptions, plan
from .transformer_layout import HeadConfig, MatrixSpec, cut, is_fused_experts, tensor_role

__all__ = ["LayerEntry", "layers_of", "module_matrices"]

_NORMS = ("Norm", "BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm")


@dataclass(frozen=True)
class LayerEntry:
    """One matrix (or module) of a model as ``layers_of`` sees it: measured (with its shape) or skipped (with why)."""

    name: str
    module_type: str
    shape: tuple[int, ...] | None
    measured: bool
    reason: str = ""


@dataclass(frozen=True)
class _Weight:
    """A measurable tensor of a live module, by its ``state_dict`` name; its bias folded in as a last column
    (or, stored (in, out), a last row) when ``bias=True``."""

    tensor: str
    module: str
    module_type: str
    data: Any
    in_out: bool = False
    bias_folded: bool = False


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


def _fold_bias(weight: Any, bias: Any, in_out: bool, name: str) -> Any:
    """The weight with its bias as one more input (float64): a last column of (out, in), a last row of (in, out)."""
    torch = require("torch", "torch")
    w, b = _tensor(weight, name).to(torch.float64), _tensor(bias, name).to(torch.float64)
    return torch.cat([w, b[None, :]]) if in_out else torch.cat([w, b[:, None]], dim=1)


def _walk(model: Any, bias: bool, conv: str, input_shapes: dict[str, tuple[int, ...]] | None) -> Iterable[tuple]:
    """(entry or weight, conv matrix or None) for every module with parameters of its own, in registration order.

    A weight shared with a module seen before (tied embeddings and LM head) is listed once, as checkpoints
    store it once."""
    nn = require("torch", "torch").nn
    from .conv import conv_matrix

    seen: dict[int, str] = {}
    for name, module in model.named_modules():
        kind = type(module).__name__
        own = dict(module.named_parameters(recurse=False))
        prefix = f"{name}." if name else ""
        if _is_quantized(module):
            raise TypeError(f"module {name!r} ({kind}) is quantized; dequantize the model (or measure a float copy)")
        tied = [seen[id(p)] for p in own.values() if id(p) in seen]
        seen.update({id(p): f"{prefix}{n}" for n, p in own.items()})
        if tied:
            yield LayerEntry(name, kind, None, False, f"weights tied to {tied[0]}, measured there"), None
        elif isinstance(module, nn.MultiheadAttention):
            yield from _attention(prefix, module, bias)
        elif isinstance(module, (nn.Linear, nn.Embedding)) or kind == "Conv1D" and hasattr(module, "nf"):
            in_out = kind == "Conv1D"  # Hugging Face GPT-2 style, weight (in, out)
            folded = bias and getattr(module, "bias", None) is not None
            data = _fold_bias(module.weight, module.bias, in_out, name) if folded else _tensor(module.weight, name)
            yield _Weight(f"{prefix}weight", name, kind, data, in_out, folded), None
        elif isinstance(module, nn.modules.conv._ConvNd):
            shape_in = (input_shapes or {}).get(name)
            mat = conv_matrix(module, name, mode=conv, input_shape=shape_in, bias=bias)
            yield LayerEntry(name, kind, tuple(mat.shape), True), mat
        elif own:
            weights = [(f"{prefix}{n}", p) for n, p in own.items() if _planned_parameter(f"{prefix}{n}", p)]
            for full, p in weights:
                yield _Weight(full, name, kind, _tensor(p, full)), None
            if not weights:
                yield LayerEntry(name, kind, None, False, _skip_reason(module, own)), None


def _planned_parameter(name: str, param: Any) -> bool:
    """A parameter of a module of no known kind that the planner measures: a router's or a custom projection's
    2-D weight with a role, or a 3-D tensor of experts."""
    if is_fused_experts(name, tuple(param.shape)):
        return True
    return param.ndim == 2 and name.endswith("weight") and tensor_role(name)[1] not in ("other", "embed", "lm_head")


def _attention(prefix: str, module: Any, bias: bool) -> Iterable[tuple]:
    """``nn.MultiheadAttention``: the fused input projection [q | k | v] rows (or q, k, v when kdim or vdim
    differ); its ``out_proj`` is a Linear, walked on its own."""
    kind = type(module).__name__
    name = prefix.rstrip(".")
    if module.in_proj_weight is not None:
        folded = bias and module.in_proj_bias is not None
        data = (_fold_bias(module.in_proj_weight, module.in_proj_bias, False, name) if folded
                else _tensor(module.in_proj_weight, name))
        yield _Weight(f"{prefix}in_proj_weight", name, kind, data, False, folded), None
        return
    e = module.embed_dim
    for part in "qkv":
        weight = getattr(module, f"{part}_proj_weight")
        b = None if module.in_proj_bias is None else module.in_proj_bias["qkv".index(part) * e :][:e]
        folded = bias and b is not None
        data = _fold_bias(weight, b, False, name) if folded else _tensor(weight, name)
        yield _Weight(f"{prefix}{part}_proj_weight", name, kind, data, False, folded), None


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


@dataclass(frozen=True)
class _Entry:
    """One row of ``layers_of``, the matrix to measure (None when skipped), what is known of it, its module."""

    entry: LayerEntry
    matrix: Any
    info: dict[str, Any]
    module: str


def _head_config(model: Any) -> HeadConfig:
    """The attention geometry of a transformers model's ``config`` (none for a plain torch module). A config whose
    head counts cannot be used (a list per stage, as SegFormer's) leaves attention whole, with a warning, as
    checkpoint analysis does."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return HeadConfig()
    try:
        return HeadConfig.from_config(config.to_dict(), f"{type(model).__name__}.config")
    except ValueError as err:
        warnings.warn(f"{err}; attention matrices are measured whole", stacklevel=4)
        return HeadConfig(known_bad=True)


def _matrix_name(module: str, spec: MatrixSpec, specs: Sequence[MatrixSpec], shared_module: bool) -> str:
    """The module's name for its only matrix; else with the expert, role and head that tell its matrices apart
    (``shared_module``: the module has other tensors, as nn.MultiheadAttention's q, k and v with their own kdim)."""
    if len(specs) == 1 and not shared_module:
        return module
    parts = [module] if module else []
    if spec.expert >= 0:
        parts.append(f"expert{spec.expert}")
    if len({s.role for s in specs}) > 1 or shared_module:
        parts.append(spec.role)
    if spec.head >= 0:
        parts.append(f"head{spec.head}")
    return ".".join(parts)


def _planned_entries(weights: list[_Weight], heads: HeadConfig, options: PlanOptions, bias: bool) -> dict[str, list]:
    """Tensor name -> its entries, as the planner decides (skipped tensors get one entry saying why)."""
    planned = plan(((w.tensor, tuple(w.data.shape)) for w in weights), heads, options,
                   in_out={w.tensor: w.in_out for w in weights},
                   bias_columns=frozenset(w.tensor for w in weights if w.bias_folded),
                   roles={w.tensor: "embed" for w in weights if "Embedding" in w.module_type})
    for _, message in planned.problems:  # left out, as checkpoint analysis records them, and said
        warnings.warn(f"{message}; left out", stacklevel=4)
    specs = {t.tensor: t.specs for t in planned.tensors}
    skipped = dict(planned.skipped) | dict(planned.problems)
    per_module = Counter(w.module for w in weights)
    out: dict[str, list] = {}
    for w in weights:
        if w.tensor in skipped:
            out[w.tensor] = [_Entry(LayerEntry(w.module, w.module_type, tuple(w.data.shape), False, skipped[w.tensor]),
                                    None, {}, w.module)]
            continue
        data = as_array(w.data, w.tensor)
        rows = []
        for spec in specs[w.tensor]:
            matrix = cut(data, spec)
            if bias:  # the paper's layout: (in [+ 1], out)
                matrix = BFloat16Bits(matrix.bits.T) if isinstance(matrix, BFloat16Bits) else matrix.T
            info = {"module": w.module_type, "tensor": w.tensor, "block": spec.block, "role": spec.role,
                    "head": spec.head, "expert": spec.expert}
            name = _matrix_name(w.module, spec, specs[w.tensor], per_module[w.module] > 1)
            shape = (matrix.bits if isinstance(matrix, BFloat16Bits) else matrix).shape
            rows.append(_Entry(LayerEntry(name, w.module_type, tuple(shape), True), matrix, info, w.module))
        out[w.tensor] = rows
    return out


def _entries(
    model: Any,
    bias: bool = False,
    include: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    conv: str = "kernel",
    input_shape: Sequence[int] | None = None,
    example_input: Any = None,
    per_head: bool = False,
    include_embeddings: bool = False,
) -> list[_Entry]:
    if conv not in ("kernel", "exact", "approx"):
        raise ValueError(f"`conv` can be 'kernel', 'exact' or 'approx', got {conv!r}")
    shapes = order = None
    if input_shape is not None and example_input is None:
        torch = require("torch", "torch")
        param = next(model.parameters())
        example_input = torch.zeros((1, *input_shape), dtype=param.dtype, device=param.device)
    if example_input is not None:
        shapes, order = _record_input_shapes(model, example_input)
    walked = list(_walk(model, bias, conv, shapes))
    weights = [item for item, _ in walked if isinstance(item, _Weight)]
    planned = _planned_entries(weights, _head_config(model), PlanOptions(per_head, include_embeddings), bias)
    entries: list[_Entry] = []
    for item, mat in walked:
        if isinstance(item, _Weight):
            entries += planned[item.tensor]
        else:
            role = tensor_role(f"{item.name}.weight")
            info = {"module": item.module_type, "block": role[0], "role": role[1]} if item.measured else {}
            entries.append(_Entry(item, mat, info, item.name))
    out = []
    for e in entries:  # patterns match the module's name or the matrix's (``attn.q``)
        if include is not None and not (_matches(e.module, include) or _matches(e.entry.name, include)):
            e = _Entry(LayerEntry(e.entry.name, e.entry.module_type, e.entry.shape, False, "not matched by include"),
                       None, {}, e.module)
        elif _matches(e.module, exclude) or _matches(e.entry.name, exclude):
            e = _Entry(LayerEntry(e.entry.name, e.entry.module_type, e.entry.shape, False, "matched by exclude"),
                       None, {}, e.module)
        out.append(e)
    if order:  # forward order where a pass was run; modules never called keep their place at the end
        rank = {n: i for i, n in reversed(list(enumerate(order)))}
        out.sort(key=lambda e: rank.get(e.module, len(order)))
    return out


def layers_of(model: Any, **options: Any) -> list[LayerEntry]:
    """What ``compute(model, **options)`` would measure, and what it skips and why, without computing.

    Options: ``per_head`` (cut q, k, v and o into heads, with the head counts of a transformers model's
    ``config``), ``include_embeddings`` (also embeddings and the LM head), ``bias`` (default False; True: the
    paper's convention for plain MLPs, the bias one more input vertex), ``include`` / ``exclude`` (glob patterns
    on module names), ``conv`` (``"kernel"``, ``"exact"`` or ``"approx"``), ``input_shape`` (one sample's shape,
    without the batch dimension) or ``example_input``.
    """
    return [e.entry for e in _entries(model, **options)]


def module_matrices(model: Any, **options: Any) -> list[NamedMatrix]:
    """The matrices of a torch model that ``compute`` measures, with what is known of them in ``info`` (module
    type; for planned weights also tensor, block, role, head and expert)."""
    entries = _entries(model, **options)
    measured = [NamedMatrix(e.entry.name, e.matrix, e.info) for e in entries if e.entry.measured]
    if not measured:
        found = sorted({type(m).__name__ for m in model.modules()} - {type(model).__name__}) or [type(model).__name__]
        filtered = any(e.entry.reason in ("not matched by include", "matched by exclude") for e in entries)
        raise ValueError(
            f"{type(model).__name__} has no measurable layer (Linear, Conv1D, MultiheadAttention, Conv1d/2d/3d)"
            + (" left after include/exclude" if filtered else "")
            + f"; found module types {found}"
        )
    return measured
