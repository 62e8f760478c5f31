"""Which linear map of a transformer a tensor is, and how to cut it into heads.

Every measured matrix is given in the ``(out, in)`` orientation of ``torch.nn.Linear`` (GPT-2's ``Conv1D``
stores ``(in, out)`` and is viewed transposed; the graph is the same either way, only names and shapes follow
one convention). Per head: the rows of q, k or v that produce head h (``head_dim x hidden``) and the columns of o
that read head h (``hidden x head_dim``). Layouts covered: Llama / Mistral / Qwen2 (separate q, k, v, o with
grouped-query attention), GPT-2 (``c_attn`` fused as [q | k | v] columns), GPT-NeoX / Pythia
(``query_key_value`` rows interleaved per head as [q_h, k_h, v_h]), Phi-3 style ``qkv_proj`` ([q | k | v] rows),
and BERT.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.weights import BFloat16Bits

__all__ = ["HeadConfig", "MatrixSpec", "ROLES", "cut", "cut_stack", "plan_tensor", "tensor_role"]

ROLES = ("q", "k", "v", "o", "qkv", "mlp_up", "mlp_gate", "mlp_down", "embed", "lm_head", "other")

_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")
# First match wins: attention.output.dense (o) before output.dense (mlp_down).
_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("embed", re.compile(r"(embed_tokens|wte|wpe|embed_in|word_embeddings|position_embeddings|"
                         r"token_type_embeddings|embed_positions)\.weight$")),
    ("lm_head", re.compile(r"(^|\.)(lm_head|embed_out)\.weight$")),
    ("qkv", re.compile(r"(c_attn|query_key_value|qkv_proj|Wqkv|qkv)\.weight$")),
    ("q", re.compile(r"(q_proj|self\.query|attn\.q|\.query)\.weight$")),
    ("k", re.compile(r"(k_proj|self\.key|attn\.k|\.key)\.weight$")),
    ("v", re.compile(r"(v_proj|self\.value|attn\.v|\.value)\.weight$")),
    ("o", re.compile(r"(o_proj|out_proj|attention\.output\.dense|attn\.c_proj|attention\.dense|attn\.dense)\.weight$")),
    ("mlp_gate", re.compile(r"(gate_proj|w1|wi_0)\.weight$")),
    ("mlp_up", re.compile(r"(up_proj|c_fc|dense_h_to_4h|intermediate\.dense|fc1|w3|wi_1|wi)\.weight$")),
    ("mlp_down", re.compile(r"(down_proj|mlp\.c_proj|dense_4h_to_h|output\.dense|fc2|w2|wo)\.weight$")),
]
_STORED_IN_OUT = re.compile(r"(c_attn|attn\.c_proj|c_fc|mlp\.c_proj)\.weight$")  # GPT-2 Conv1D


@dataclass(frozen=True)
class HeadConfig:
    """Attention geometry from ``config.json``; absent fields stay None."""

    model_type: str = ""
    hidden: int | None = None
    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    known_bad: bool = False  # a config was there but unusable (already reported)

    @classmethod
    def from_config(cls, config: dict[str, Any], source: str = "config.json") -> HeadConfig:
        hidden = config.get("hidden_size", config.get("n_embd", config.get("d_model")))
        heads = config.get("num_attention_heads", config.get("n_head"))
        kv = config.get("num_key_value_heads", heads) or heads
        head_dim = config.get("head_dim")
        if heads and hidden and not head_dim:
            if hidden % heads:
                raise ValueError(
                    f"{source}: hidden size {hidden} is not divisible by num_attention_heads {heads}; "
                    "fix the config or give head_dim"
                )
            head_dim = hidden // heads
        if heads and kv and heads % kv:
            raise ValueError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
        return cls(str(config.get("model_type", "")), hidden, heads, kv, head_dim)

    @property
    def known(self) -> bool:
        return bool(self.heads and self.head_dim)


@dataclass(frozen=True)
class MatrixSpec:
    """One matrix to measure: from which tensor, its block, role, head (-1: whole), and how to cut it."""

    tensor: str
    block: int
    role: str
    head: int
    rows: int
    cols: int
    cut: tuple[Any, ...] = field(default=())  # ("rows"|"cols"|"neox", ...) applied after orienting


def tensor_role(name: str) -> tuple[int, str]:
    """(block index or -1, role) of a tensor, from its name."""
    match = _BLOCK.search(name)
    block = int(match.group(1)) if match else -1
    for role, pattern in _RULES:
        if pattern.search(name):
            return block, role
    return block, "other"


def plan_tensor(name: str, shape: tuple[int, ...], heads: HeadConfig, per_head: bool) -> list[MatrixSpec]:
    """The matrices a 2-D tensor contributes: whole, split q/k/v, or one per head."""
    block, role = tensor_role(name)
    transposed = bool(_STORED_IN_OUT.search(name)) or heads.model_type == "gpt2" and role in ("qkv", "o", "mlp_up", "mlp_down")
    out_dim, in_dim = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
    orient = ("T",) if transposed else ()
    if role == "qkv" and heads.known:
        return _split_fused(name, block, out_dim, in_dim, heads, per_head, orient)
    if not per_head or role not in ("q", "k", "v", "o") or not heads.known:
        return [MatrixSpec(name, block, role, -1, out_dim, in_dim, orient)]
    hd = heads.head_dim or 0
    expected = (heads.kv_heads or heads.heads or 0) if role in ("k", "v") else (heads.heads or 0)
    width = in_dim if role == "o" else out_dim
    if width != expected * hd:
        raise ValueError(
            f"tensor {name!r} has {width} {'inputs' if role == 'o' else 'outputs'}, but the config gives "
            f"{expected} heads x head_dim {hd} = {expected * hd}"
        )
    if role == "o":
        n = in_dim // hd
        return [MatrixSpec(name, block, "o", h, out_dim, hd, orient + ("cols", h * hd, (h + 1) * hd)) for h in range(n)]
    n = out_dim // hd
    return [MatrixSpec(name, block, role, h, hd, in_dim, orient + ("rows", h * hd, (h + 1) * hd)) for h in range(n)]


def _split_fused(name: str, block: int, out_dim: int, in_dim: int, heads: HeadConfig, per_head: bool,
                 orient: tuple[Any, ...]) -> list[MatrixSpec]:
    hd, nq, nkv = heads.head_dim or 0, heads.heads or 0, heads.kv_heads or heads.heads or 0
    if out_dim != (nq + 2 * nkv) * hd:
        raise ValueError(
            f"tensor {name!r}: fused qkv has {out_dim} outputs, but the config's heads give "
            f"({nq} + 2 x {nkv}) x {hd} = {(nq + 2 * nkv) * hd}"
        )
    specs = []
    if heads.model_type in ("gpt_neox", "gptj") or "query_key_value" in name:  # rows [q_h, k_h, v_h] per head
        for p, role in enumerate("qkv"):
            if per_head:
                specs += [MatrixSpec(name, block, role, h, hd, in_dim, orient + ("neox", h, p, nq, hd))
                          for h in range(nq)]
            else:
                specs.append(MatrixSpec(name, block, role, -1, nq * hd, in_dim, orient + ("neox", -1, p, nq, hd)))
        return specs
    starts = {"q": 0, "k": nq * hd, "v": (nq + nkv) * hd}
    counts = {"q": nq, "k": nkv, "v": nkv}
    for role in "qkv":
        if per_head:
            specs += [MatrixSpec(name, block, role, h, hd, in_dim,
                                 orient + ("rows", starts[role] + h * hd, starts[role] + (h + 1) * hd))
                      for h in range(counts[role])]
        else:
            specs.append(MatrixSpec(name, block, role, -1, counts[role] * hd, in_dim,
                                    orient + ("rows", starts[role], starts[role] + counts[role] * hd)))
    return specs


def cut(tensor: Any, spec: MatrixSpec) -> Any:
    """The spec's matrix from its tensor: views wherever the layout allows (a whole NeoX q, k or v is a copy)."""
    if isinstance(tensor, BFloat16Bits):
        return BFloat16Bits(cut(tensor.bits, spec))
    ops = list(spec.cut)
    x = tensor
    if ops and ops[0] == "T":
        x, ops = x.T, ops[1:]
    if not ops:
        return x
    kind = ops[0]
    if kind == "rows":
        return x[ops[1] : ops[2]]
    if kind == "cols":
        return x[:, ops[1] : ops[2]]
    head, part, n_heads, hd = ops[1:]
    grouped = x.reshape(n_heads, 3, hd, x.shape[1])
    return grouped[head, part] if head >= 0 else np.ascontiguousarray(grouped[:, part]).reshape(n_heads * hd, -1)


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
