"""Which linear map of a transformer a tensor is, and how to cut it into heads, fused parts and experts.

Every measured matrix is given in the ``(out, in)`` orientation of ``torch.nn.Linear`` (GPT-2's ``Conv1D``
stores ``(in, out)`` and is viewed transposed; the graph is the same either way, only names and shapes follow
one convention). Per head: the rows of q, k or v that produce head h (``head_dim x hidden``) and the columns of o
that read head h (``hidden x head_dim``).

Fused tensors are split into the maps they hold when the config gives the head counts and the model type is
one whose layout is known (:data:`FUSED_QKV_LAYOUTS`); another model type's fused qkv stays one ``qkv`` matrix:

==========================  ==============================================================================
``c_attn`` (GPT-2, GPT)     ``Conv1D`` (in, out); outputs [q | k | v]
``qkv_proj`` (Phi-3),       rows [q | k | v], grouped-query sizes (q: heads x head_dim, k and v:
``Wqkv`` (MPT)              kv_heads x head_dim)
``query_key_value``         rows interleaved per head, [q_h, k_h, v_h] for each head h (GPT-NeoX / Pythia,
                            Bloom, Falcon without ``new_decoder_architecture`` or ``multi_query``)
Falcon, new architecture    rows grouped per key/value head: [q_(g,1) .. q_(g,r), k_g, v_g], r = heads / kv_heads
Falcon, ``multi_query``     rows [q | k | v] with one key/value head
``gate_up_proj`` (Phi-3)    rows [gate | up]
==========================  ==============================================================================

Mixture of experts: ``experts.E.*`` tensors (Mixtral ``block_sparse_moe.experts.E.w1/w2/w3``, OLMoE and
Qwen2-MoE ``mlp.experts.E.gate_proj/up_proj/down_proj``) carry their expert E; the 3-D tensors that
transformers 5 keeps in a live model (``mlp.experts.gate_up_proj``: experts x [gate | up] x hidden,
``mlp.experts.down_proj``: experts x hidden x intermediate) give one matrix per expert. The router
(``block_sparse_moe.gate``, ``mlp.gate``, ``shared_expert_gate``) has the role ``router``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.weights import BFloat16Bits

__all__ = ["HeadConfig", "MatrixSpec", "ROLES", "cut", "cut_stack", "plan_tensor", "tensor_expert", "tensor_role"]

#: Roles of measured matrices (``qkv`` only where a fused tensor cannot be split: no head counts known).
ROLES = ("q", "k", "v", "o", "qkv", "mlp_up", "mlp_gate", "mlp_down", "router", "embed", "lm_head", "other")

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
_EXPERT = re.compile(r"(?:^|\.)experts\.(\d+)\.")
_FUSED_EXPERTS = re.compile(r"(?:^|\.)experts\.(gate_up_proj|down_proj)$")  # transformers 5, live modules
# First match wins: attention.output.dense (o) before output.dense (mlp_down); routers before MLP gates.
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("embed", re.compile(r"(embed_tokens|wte|wpe|embed_in|embed_positions|[a-z_]*embeddings?|[a-z_]*_embed|"
                         r"relative_attention_bias)\.weight$|(^|\.)shared\.weight$")),
    ("lm_head", re.compile(r"(^|\.)(lm_head|embed_out)\.weight$")),
    ("router", re.compile(r"((block_sparse_moe|mlp|moe)\.gate|shared_expert_gate|router(\.classifier|\.layer)?)"
                          r"\.weight$")),
    ("qkv", re.compile(r"(c_attn|query_key_value|qkv_proj|Wqkv|qkv|linear_qkv)\.weight$|in_proj_weight$")),
    ("gate_up", re.compile(r"(gate_up_proj(\.weight)?|experts\.gate_up_proj)$")),
    ("q", re.compile(r"(q_proj|self\.query|attn\.q|\.query|attention\.wq)\.weight$|q_proj_weight$")),
    ("k", re.compile(r"(k_proj|self\.key|attn\.k|\.key|attention\.wk)\.weight$|k_proj_weight$")),
    ("v", re.compile(r"(v_proj|self\.value|attn\.v|\.value|attention\.wv)\.weight$|v_proj_weight$")),
    ("o", re.compile(r"(o_proj|out_proj|attention\.output\.dense|attn\.c_proj|attention\.dense|attn\.dense|"
                     r"attention\.wo|self_attention\.linear_proj)\.weight$")),
    ("mlp_gate", re.compile(r"(gate_proj|w1|wi_0)\.weight$")),
    ("mlp_up", re.compile(r"(up_proj|c_fc|dense_h_to_4h|intermediate\.dense|fc1|w3|wi_1|wi|linear_fc1)\.weight$")),
    ("mlp_down", re.compile(r"(down_proj|mlp\.c_proj|dense_4h_to_h|output\.dense|fc2|w2|wo|linear_fc2)\.weight$|"
                            r"experts\.down_proj$")),
]
# nn.MultiheadAttention's fused input projection: [q | k | v] of equal thirds by definition, split without a config.
_EQUAL_THIRDS = re.compile(r"in_proj_weight$")
_STORED_IN_OUT = re.compile(r"(c_attn|attn\.c_proj|c_fc|mlp\.c_proj)\.weight$")  # GPT-2 style Conv1D
_LINEAR_C_MODEL_TYPES = ("gpt_bigcode",)  # model types whose c_* maps are nn.Linear, stored (out, in)
#: How each model type's fused qkv orders its rows, as its modeling code reads them. A fused tensor of another
#: model type (CodeGen's [q, v, k] groups, InternLM2's wqkv, ...) is kept whole, one ``qkv`` row, not cut by a guess.
FUSED_QKV_LAYOUTS = {"gpt2": "blocks", "openai-gpt": "blocks", "gpt_neox": "interleaved", "bloom": "interleaved",
                     "phi3": "blocks", "mpt": "blocks", "falcon": "from the config"}
#: Model types whose live modules keep experts in 3-D tensors (experts x [gate | up] x hidden, experts x hidden x
#: intermediate), checked against their modeling code; Llama 4 and GPT-OSS store them (experts, in, out).
FUSED_EXPERTS_MODEL_TYPES = ("mixtral", "olmoe", "qwen2_moe")
_HEAD_FIELDS = {
    "hidden": ("hidden_size", "n_embd", "n_embed", "d_model"),
    "heads": ("num_attention_heads", "n_head", "n_heads"),
    "kv_heads": ("num_key_value_heads", "num_kv_heads", "kv_n_heads"),
    "head_dim": ("head_dim",),
}


def _field(config: dict[str, Any], names: tuple[str, ...], source: str) -> int | None:
    """The first of ``names`` in the config, checked to be a positive integer (None when absent)."""
    for name in names:
        if name in config and config[name] is not None:
            value = config[name]
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{source}: {name} must be a positive integer, got {value!r}")
            return value
    return None


@dataclass(frozen=True)
class HeadConfig:
    """Attention geometry from ``config.json``; absent fields stay None.

    ``qkv_layout`` says how a fused qkv tensor orders its rows: ``"interleaved"`` (per head [q_h, k_h, v_h]),
    ``"grouped"`` (Falcon's new architecture: per key/value head its queries, then k, v), ``"blocks"``
    ([q | k | v]), or ``""`` when the model type's layout is not known (the tensor is then kept whole)."""

    model_type: str = ""
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    known_bad: bool = False  # a config was there but unusable (already reported)
    qkv_layout: str = ""

    @classmethod
    def from_config(cls, config: Any, source: str = "config.json") -> HeadConfig:
        """The geometry of a ``config.json`` (as a dict); ValueError naming the field when it cannot be used."""
        if not isinstance(config, dict):
            raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
        model_type = str(config.get("model_type", ""))
        hidden = _field(config, _HEAD_FIELDS["hidden"], source)
        heads = _field(config, _HEAD_FIELDS["heads"], source)
        head_dim = _field(config, _HEAD_FIELDS["head_dim"], source)
        kv = _field(config, _HEAD_FIELDS["kv_heads"], source)
        layout = FUSED_QKV_LAYOUTS.get(model_type, "")
        if model_type == "falcon":
            if config.get("new_decoder_architecture"):
                layout = "grouped"
            elif config.get("multi_query", True):
                layout, kv = "blocks", 1
            else:
                layout, kv = "interleaved", heads
        kv = kv or heads
        if heads and hidden and not head_dim:
            if hidden % heads:
                raise ValueError(
                    f"{source}: hidden size {hidden} is not divisible by num_attention_heads {heads}; "
                    "fix the config or give head_dim"
                )
            head_dim = hidden // heads
        if heads and kv and heads % kv:
            raise ValueError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
        return cls(model_type, hidden, heads, kv, head_dim, qkv_layout=layout)

    @property
    def known(self) -> bool:
        return bool(self.heads and self.head_dim)


@dataclass(frozen=True)
class MatrixSpec:
    """One matrix to measure: from which tensor, its block, role, head and expert (-1: none), and how to cut it.

    ``cut`` is a sequence of operations applied in order: ``("expert", e)`` (index a 3-D tensor), ``("T",)``
    (view transposed), then one of ``("rows", a, b)``, ``("cols", a, b)``, ``("groups", head, part, groups,
    per_group, head_dim)`` (rows of a tensor viewed as (groups, per_group, head_dim, in))."""

    tensor: str
    block: int
    role: str
    head: int
    rows: int
    cols: int
    cut: tuple[Any, ...] = field(default=())
    expert: int = -1

    @property
    def key(self) -> tuple[str, int, int]:
        """What tells this matrix apart from the others of its tensor."""
        return (self.role, self.head, self.expert)


def tensor_role(name: str) -> tuple[int, str]:
    """(block index or -1, role) of a tensor, from its name (``gate_up`` for a fused gate and up projection)."""
    match = _BLOCK.search(name)
    block = int(match.group(1)) if match else -1
    for role, pattern in _RULES:
        if pattern.search(name):
            return block, role
    return block, "other"


def tensor_expert(name: str) -> int:
    """The expert a tensor belongs to (``...experts.3.w1.weight`` -> 3), or -1."""
    match = _EXPERT.search(name)
    return int(match.group(1)) if match else -1


def is_fused_experts(name: str, shape: tuple[int, ...]) -> bool:
    """A 3-D tensor holding every expert of a block (transformers 5's live MoE modules)."""
    return len(shape) == 3 and bool(_FUSED_EXPERTS.search(name))


def stored_in_out(name: str, heads: HeadConfig) -> bool:
    """Whether a tensor is stored (in, out), as GPT-2's ``Conv1D`` does."""
    if heads.model_type in _LINEAR_C_MODEL_TYPES:
        return False
    return bool(_STORED_IN_OUT.search(name))


def plan_tensor(
    name: str, shape: tuple[int, ...], heads: HeadConfig, per_head: bool, *, in_out: bool | None = None,
    bias_column: bool = False, role: str | None = None,
) -> list[MatrixSpec]:
    """The matrices a 2-D tensor (or a 3-D tensor of experts) contributes: whole, split, or one per head.

    Parameters
    ----------
    in_out
        The tensor is stored (in, out); default: guessed from its name and the model type.
    bias_column
        The tensor's last input column is a bias folded in (live models with ``bias=True``); it stays with the
        whole and row-cut matrices, and is left out of per-head cuts of o.
    role
        The role when the caller knows it better than the name tells (a live ``nn.Embedding``).

    Raises
    ------
    ValueError
        When the shape does not fit the config's heads (naming the tensor and both sizes), or no matrix results.
    """
    block, named_role = tensor_role(name)
    role = role or named_role
    if is_fused_experts(name, shape):
        _check_fused_experts(name, shape, role, heads)
        specs = []
        for e in range(shape[0]):
            for s in _plan_matrix(name, block, role, (shape[1], shape[2]), heads, per_head, (), bias_column):
                specs.append(MatrixSpec(s.tensor, s.block, s.role, s.head, s.rows, s.cols, ("expert", e) + s.cut, e))
    else:
        if len(shape) != 2:
            raise ValueError(f"tensor {name!r}: expected a 2-D weight, got shape {shape}")
        transposed = stored_in_out(name, heads) if in_out is None else in_out
        out_dim, in_dim = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        orient = ("T",) if transposed else ()
        expert = tensor_expert(name)
        specs = [MatrixSpec(s.tensor, s.block, s.role, s.head, s.rows, s.cols, s.cut, expert)
                 for s in _plan_matrix(name, block, role, (out_dim, in_dim), heads, per_head, orient, bias_column)]
    if not specs:
        raise ValueError(f"tensor {name!r}: no matrix to measure (check the head counts in config.json)")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):  # the database tells matrices apart by these keys; never let two collide
        raise ValueError(f"tensor {name!r}: the plan gives two matrices the same (role, head, expert)")
    return specs


def _check_fused_experts(name: str, shape: tuple[int, ...], role: str, heads: HeadConfig) -> None:
    """A 3-D tensor of experts is cut only in the layout known to be right for its model type."""
    hidden_axis = 2 if role == "gate_up" else 1
    if heads.model_type not in FUSED_EXPERTS_MODEL_TYPES or heads.hidden not in (None, shape[hidden_axis]):
        raise ValueError(
            f"tensor {name!r}: a 3-D tensor of experts {shape} whose layout is not known for model type "
            f"{heads.model_type or '(none)'!r} (known: {', '.join(FUSED_EXPERTS_MODEL_TYPES)}, stored experts x out x "
            "in); not measured")


def _plan_matrix(name: str, block: int, role: str, out_in: tuple[int, int], heads: HeadConfig, per_head: bool,
                 orient: tuple[Any, ...], bias_column: bool) -> list[MatrixSpec]:
    out_dim, in_dim = out_in
    if role == "gate_up":
        if out_dim % 2:
            raise ValueError(f"tensor {name!r}: a fused gate and up projection needs an even number of rows, "
                             f"got {out_dim}")
        half = out_dim // 2
        return [MatrixSpec(name, block, "mlp_gate", -1, half, in_dim, orient + ("rows", 0, half)),
                MatrixSpec(name, block, "mlp_up", -1, half, in_dim, orient + ("rows", half, out_dim))]
    if role == "qkv" and heads.known:
        return _split_fused(name, block, out_dim, in_dim, heads, per_head, orient)
    if role == "qkv" and _EQUAL_THIRDS.search(name) and out_dim % 3 == 0:
        third = out_dim // 3
        return [MatrixSpec(name, block, r, -1, third, in_dim, orient + ("rows", i * third, (i + 1) * third))
                for i, r in enumerate("qkv")]
    if not per_head or role not in ("q", "k", "v", "o") or not heads.known:
        return [MatrixSpec(name, block, role, -1, out_dim, in_dim, orient)]
    hd = heads.head_dim or 0
    expected = (heads.kv_heads or heads.heads or 0) if role in ("k", "v") else (heads.heads or 0)
    width = in_dim - bias_column if role == "o" else out_dim
    if width != expected * hd:
        raise ValueError(
            f"tensor {name!r} has {width} {'inputs' if role == 'o' else 'outputs'}, but the config gives "
            f"{expected} heads x head_dim {hd} = {expected * hd}"
        )
    if role == "o":
        return [MatrixSpec(name, block, "o", h, out_dim, hd, orient + ("cols", h * hd, (h + 1) * hd))
                for h in range(expected)]
    return [MatrixSpec(name, block, role, h, hd, in_dim, orient + ("rows", h * hd, (h + 1) * hd))
            for h in range(expected)]


def _split_fused(name: str, block: int, out_dim: int, in_dim: int, heads: HeadConfig, per_head: bool,
                 orient: tuple[Any, ...]) -> list[MatrixSpec]:
    layout = heads.qkv_layout
    if not layout:
        return [MatrixSpec(name, block, "qkv", -1, out_dim, in_dim, orient)]
    hd, nq, nkv = heads.head_dim or 0, heads.heads or 0, heads.kv_heads or heads.heads or 0
    if out_dim != (nq + 2 * nkv) * hd:
        raise ValueError(
            f"tensor {name!r}: fused qkv has {out_dim} outputs, but the config's heads give "
            f"({nq} + 2 x {nkv}) x {hd} = {(nq + 2 * nkv) * hd}"
        )
    if layout == "interleaved" and nq != nkv:
        raise ValueError(f"tensor {name!r}: rows interleaved per head need as many key/value heads as query "
                         f"heads, the config gives {nq} and {nkv}")
    if layout == "blocks":
        starts = {"q": 0, "k": nq * hd, "v": (nq + nkv) * hd}
        counts = {"q": nq, "k": nkv, "v": nkv}
        specs = []
        for role in "qkv":
            if per_head:
                specs += [MatrixSpec(name, block, role, h, hd, in_dim,
                                     orient + ("rows", starts[role] + h * hd, starts[role] + (h + 1) * hd))
                          for h in range(counts[role])]
            else:
                specs.append(MatrixSpec(name, block, role, -1, counts[role] * hd, in_dim,
                                        orient + ("rows", starts[role], starts[role] + counts[role] * hd)))
        return specs
    # Rows viewed as (groups, per_group, head_dim): interleaved = (heads, 3, hd); grouped = (kv, r + 2, hd).
    groups, per_group = (nq, 3) if layout == "interleaved" else (nkv, nq // nkv + 2)
    parts = {"q": range(per_group - 2), "k": [per_group - 2], "v": [per_group - 1]}
    specs = []
    for role in "qkv":
        if per_head:  # head h of q is in group h // len(parts["q"]), at position h % len(parts["q"])
            n = len(parts[role])
            specs += [MatrixSpec(name, block, role, h, hd, in_dim,
                                 orient + ("groups", h // n, parts[role][h % n], groups, per_group, hd))
                      for h in range(groups * n)]
        else:
            specs.append(MatrixSpec(name, block, role, -1, groups * len(parts[role]) * hd, in_dim,
                                    orient + ("groups", -1, tuple(parts[role]), groups, per_group, hd)))
    return specs


def cut(tensor: Any, spec: MatrixSpec) -> Any:
    """The spec's matrix from its tensor: views wherever the layout allows (a whole interleaved q, k or v is a
    copy)."""
    if isinstance(tensor, BFloat16Bits):
        return BFloat16Bits(cut(tensor.bits, spec))
    ops = list(spec.cut)
    x = tensor
    if ops and ops[0] == "expert":
        x, ops = x[ops[1]], ops[2:]
    if ops and ops[0] == "T":
        x, ops = x.T, ops[1:]
    if not ops:
        return x
    kind = ops[0]
    if kind == "rows":
        return x[ops[1] : ops[2]]
    if kind == "cols":
        return x[:, ops[1] : ops[2]]
    head, part, groups, per_group, hd = ops[1:]
    grouped = x.reshape(groups, per_group, hd, x.shape[1])
    if head >= 0:
        return grouped[head, part]
    return np.ascontiguousarray(grouped[:, list(part)]).reshape(-1, x.shape[1])


def cut_stack(tensor: Any, specs: Sequence[MatrixSpec]) -> Any | None:
    """The specs' matrices stacked (``stack[k]`` is spec k's), to be measured in one call; ``None`` when their
    shapes differ or the tensor is not a numpy array. A view when they are consecutive row blocks (the heads of
    Llama's q, k and v, or of a fused [q | k | v]), else one copy of them all (o's columns, GPT-2's transposed
    ``Conv1D``, NeoX's interleaved rows)."""
    if isinstance(tensor, BFloat16Bits):
        stack = cut_stack(tensor.bits, specs)
        return None if stack is None else BFloat16Bits(stack)
    if not isinstance(tensor, np.ndarray) or not specs:
        return None
    tiles = _row_tiles(tensor, specs)
    if tiles is not None:
        return tiles
    matrices = [cut(tensor, spec) for spec in specs]
    if len({m.shape for m in matrices}) != 1:
        return None
    return np.stack(matrices)


def _row_tiles(tensor: np.ndarray, specs: Sequence[MatrixSpec]) -> np.ndarray | None:
    """The specs as a 3-D view of the tensor, when they are equal, consecutive row blocks of it."""
    if tensor.ndim != 2 or not tensor.flags.c_contiguous or any(s.cut[:1] != ("rows",) for s in specs):
        return None
    start, height = specs[0].cut[1], specs[0].cut[2] - specs[0].cut[1]
    for k, spec in enumerate(specs):
        if spec.cut[1:] != (start + k * height, start + (k + 1) * height):
            return None
    return tensor[start : start + len(specs) * height].reshape(len(specs), height, tensor.shape[1])
