"""Which runs, checkpoints and tensors an analysis covers: the plan ``describe`` shows and ``analyze`` runs.

Each path is one run, identified by its resolved path; each checkpoint's tensors are planned by the one planner
(:func:`neural_persistence.sources.plan.plan`) with the head counts of its ``config.json``. Whatever keeps a
file, a config or a tensor from being measured as asked is a :class:`Problem`, recorded and reported, while the
rest is planned.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..sources.checkpoints import Checkpoint, TensorRef, find_checkpoints, hub_checkpoints, tensors_of
from ..sources.hub_cache import HubOptions, looks_like_repo_id, repo_folder
from ..sources.plan import PlanOptions, plan
from ..sources.safetensors_file import CorruptCheckpointError
from ..sources.transformer_layout import HeadConfig, MatrixSpec

__all__ = ["PlannedRuns", "Problem", "Unit", "plan_units"]


@dataclass(frozen=True)
class Unit:
    """One tensor of one checkpoint of one run, and the matrices it yields."""

    run: str
    checkpoint: Checkpoint
    tensor: TensorRef
    specs: tuple[MatrixSpec, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.run, self.checkpoint.name, self.tensor.name)

    @functools.cached_property
    def signature(self) -> str:
        """What the stored results of this unit must have been measured from: the tensor (dtype, shape, and its
        file's size and modification time, so a checkpoint saved again under the same name is measured again)
        and every matrix's cut (so a changed config that cuts differently, with as many matrices, is too)."""
        try:
            stat = self.tensor.file.stat()
            file = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            file = (-1, -1)
        cuts = [(s.role, s.head, s.expert, s.rows, s.cols, s.cut) for s in self.specs]
        text = repr((self.tensor.dtype, self.tensor.shape, file, cuts))
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Problem:
    """Something found while planning that keeps a tensor (or a file, or a config) from being measured as asked."""

    run: str
    checkpoint: Checkpoint
    tensor: str
    message: str


@dataclass
class PlannedRuns:
    """What ``analyze`` will do: the runs (label -> resolved path), their checkpoints, the units, the problems."""

    runs: dict[str, str] = field(default_factory=dict)
    checkpoints: list[tuple[str, Checkpoint]] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _heads(checkpoint: Checkpoint) -> HeadConfig:
    if checkpoint.config is None:
        return HeadConfig()
    return HeadConfig.from_config(checkpoint.config, str(checkpoint.path / "config.json"))


def plan_units(
    paths: Sequence[str | Path], options: PlanOptions = PlanOptions(), known_runs: dict[str, str] | None = None,
    hub: HubOptions = HubOptions(),
) -> PlannedRuns:
    """Checkpoints (with their run), units to measure, and problems found while planning.

    A path that does not exist but reads as ``ORG/NAME`` is a repository of the local hub cache, its revisions
    matching ``hub.revisions`` the checkpoints (:mod:`~neural_persistence.sources.hub_cache`).
    A run is identified by its resolved path: ``known_runs`` (resolved path -> label, from the database) keeps
    its label across calls, and a new run whose folder name is already taken gets ``name-2``, ``name-3``, ..."""
    planned = PlannedRuns()
    labels = dict(known_runs or {})
    taken = set(labels.values())
    for path in paths:
        from_hub = not Path(path).exists() and looks_like_repo_id(str(path))
        resolved = str(repo_folder(str(path), hub.cache_dir).resolve()) if from_hub else str(Path(path).resolve())
        name = str(path).split("/")[-1] if from_hub else Path(resolved).name
        run = labels.get(resolved) or _unique(name or "run", taken)
        labels[resolved] = run
        planned.runs[run] = resolved
        for ckpt in hub_checkpoints(str(path), hub) if from_hub else find_checkpoints(path):
            planned.checkpoints.append((run, ckpt))
            _plan_checkpoint(run, ckpt, options, planned)
    return planned


def _plan_checkpoint(run: str, ckpt: Checkpoint, options: PlanOptions, planned: PlannedRuns) -> None:
    problems = planned.problems
    try:
        heads = _heads(ckpt)
    except ValueError as err:
        problems.append(Problem(run, ckpt, "config.json", f"{err}; attention matrices are measured whole"))
        heads = HeadConfig(known_bad=True)
    if options.per_head and not heads.known and not heads.known_bad:
        problems.append(Problem(run, ckpt, "config.json", "no head counts known (no usable config.json): "
                                "attention matrices are measured whole"))
    for file, message in ckpt.problems:
        problems.append(Problem(run, ckpt, Path(file).name, f"{file}: {message}"))
    for tensor, shard in ckpt.missing.items():
        problems.append(Problem(run, ckpt, tensor, f"shard {shard} listed in the index is missing"))
    refs: dict[str, TensorRef] = {}
    repeated: list[TensorRef] = []
    for ref in _readable_tensors(run, ckpt, problems):
        if ref.name in refs:
            repeated.append(ref)
        else:
            refs[ref.name] = ref
    result = plan(((ref.name, ref.shape) for ref in refs.values()), heads, options)
    for tensor, message in result.problems:
        problems.append(Problem(run, ckpt, tensor, message))
    measured = {t.tensor for t in result.tensors}
    for ref in (r for r in repeated if r.name in measured):  # one row per tensor name: the copy cannot be stored
        problems.append(Problem(run, ckpt, f"{ref.name} ({ref.file.name})",
                                f"tensor {ref.name!r} is in both {refs[ref.name].file} and {ref.file}; measured "
                                f"from {refs[ref.name].file.name} only (analyse the other file on its own)"))
    planned.units += [Unit(run, ckpt, refs[t.tensor], t.specs) for t in result.tensors]


def _readable_tensors(run: str, ckpt: Checkpoint, problems: list[Problem]) -> list[TensorRef]:
    refs = []
    for file in ckpt.files:
        try:
            refs += tensors_of(file)
        except (CorruptCheckpointError, OSError) as err:
            problems.append(Problem(run, ckpt, file.name, str(err) if str(file) in str(err) else f"{file}: {err}"))
    return refs


def _unique(name: str, taken: set[str]) -> str:
    candidate, i = name, 1
    while candidate in taken:
        i += 1
        candidate = f"{name}-{i}"
    taken.add(candidate)
    return candidate
