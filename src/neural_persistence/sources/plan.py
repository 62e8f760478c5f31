"""The one answer to "what is measured": the matrices of a model's named tensors, live or saved.

Both a checkpoint on disk (:mod:`~neural_persistence.analysis.analyze`) and a live torch model
(:func:`~neural_persistence.sources.torch_modules.module_matrices`, so also ``EarlyStopping`` and the training
callbacks) list their tensors by name and shape and ask :func:`plan` which matrices they hold. Roles, fused
splits, heads and experts come from :mod:`~neural_persistence.sources.transformer_layout`; what is left out, and
why, is decided here. So a value logged during training is the analysis of the checkpoint saved at that step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .transformer_layout import HeadConfig, MatrixSpec, is_fused_experts, plan_tensor, tensor_role

__all__ = ["Plan", "PlanOptions", "TensorPlan", "plan"]


@dataclass(frozen=True)
class PlanOptions:
    """The options that change what is measured; ``key`` is stored with every result, so that results of
    different options never mix (and a table shows only what the current options measure)."""

    per_head: bool = False
    include_embeddings: bool = False

    @property
    def key(self) -> str:
        return f"per_head={int(self.per_head)};embeddings={int(self.include_embeddings)}"


@dataclass(frozen=True)
class TensorPlan:
    """A tensor and the matrices it yields."""

    tensor: str
    specs: tuple[MatrixSpec, ...]


@dataclass
class Plan:
    """What a model's tensors yield: measured tensors, tensors left out (with why), tensors that cannot be used."""

    tensors: list[TensorPlan] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (tensor, why)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (tensor, error message)

    @property
    def n_matrices(self) -> int:
        return sum(len(t.specs) for t in self.tensors)


_LEFT_OUT = {"embed": "an embedding", "lm_head": "the LM head"}


def skip_reason(name: str, shape: tuple[int, ...], options: PlanOptions, role: str | None = None) -> str | None:
    """Why a tensor is not measured, or None when it is."""
    if is_fused_experts(name, shape):
        return None
    if len(shape) != 2:
        return f"{len(shape)}-D: not a weight matrix"
    if not name.endswith("weight"):
        return "not a weight (a bias or a buffer)"
    role = role or tensor_role(name)[1]
    if role in _LEFT_OUT and not options.include_embeddings:
        return f"{_LEFT_OUT[role]}: left out unless include_embeddings (--include-embeddings)"
    return None


def plan(
    tensors: Iterable[tuple[str, tuple[int, ...]]], heads: HeadConfig, options: PlanOptions,
    in_out: dict[str, bool] | None = None, bias_columns: frozenset[str] = frozenset(),
    roles: dict[str, str] | None = None,
) -> Plan:
    """The matrices of named tensors ``(name, shape)``, in the order given.

    ``in_out`` names the tensors known to be stored (in, out) (a live ``Conv1D``); others are guessed from the
    name. ``bias_columns`` names the tensors whose last input column is a folded-in bias. ``roles`` gives the
    role of tensors whose module tells it better than the name (a live ``nn.Embedding``).
    """
    result = Plan()
    roles = roles or {}
    for name, shape in tensors:
        why = skip_reason(name, shape, options, roles.get(name))
        if why is not None:
            result.skipped.append((name, why))
            continue
        try:
            specs = plan_tensor(name, shape, heads, options.per_head, in_out=(in_out or {}).get(name),
                                bias_column=name in bias_columns, role=roles.get(name))
        except ValueError as err:
            result.problems.append((name, str(err)))
            continue
        result.tensors.append(TensorPlan(name, tuple(specs)))
    return result
