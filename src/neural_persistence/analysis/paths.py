"""Deep graph persistence along the paths of each transformer block, for every checkpoint of a run.

DGP (:mod:`neural_persistence.core.dgp`) folds a chain of layers into one inputs x outputs matrix with the
max-min product and measures that. A transformer block is not a chain, so we measure the chains inside it that a
reader can name, each a hidden x hidden matrix:

``mlp``  up (and gate) -> down: how strongly each input feature reaches each output feature through the hidden
         units. Gated MLPs multiply ``act(gate x)`` by ``up x``; a unit passes input i when either map reads it
         strongly, so the first layer's edge is the larger of the scaled |gate| and |up| edges.
``vo``   per head, v -> o through the head's ``head_dim`` values: which input features the head copies into
         which output features (the OV circuit of Elhage et al. 2021). Grouped-query heads use their key/value
         head.
``qk``   per head, q -> k^T through ``head_dim``: which query-side features meet which key-side features in the
         attention score (the QK circuit).

Each chain is scaled as DGP does (each layer z-scored, |.|, divided by the largest over the chain). What this does
not see: the residual stream (which adds the identity to every path), layer norms, the softmax (which makes the
QK path a ranking, not a gain), and the nonlinearity between up and down. It is a summary of where the weights
route strength, comparable across checkpoints of one run, not a model of the function.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..core.dgp import fold, folded_persistence, scaled_layers
from ..core.weights import BFloat16Bits, as_array
from ..sources.checkpoints import read_tensor
from ..sources.plan import PlanOptions
from ..sources.transformer_layout import cut
from .planning import Unit, plan_units

__all__ = ["PATHS", "PathResult", "block_paths", "run_paths"]

PATHS = ("mlp", "vo", "qk")
RESULTS_FILE = "dgp.csv"


@dataclass(frozen=True)
class PathResult:
    """DGP of one path of one block at one checkpoint (``head`` -1 for the MLP path)."""

    run: str
    checkpoint: str
    step: int | None
    block: int
    path: str
    head: int
    rows: int
    cols: int
    np: float
    normalized_np: float


def _as_float(x: Any, dtype: Any) -> np.ndarray:
    arr = as_array(x)
    if isinstance(arr, BFloat16Bits):
        return (arr.bits.astype(np.uint32) << 16).view(np.float32).astype(dtype)
    return np.asarray(arr, dtype=dtype)


def _mlp_layers(matrices: dict[tuple[str, int], np.ndarray], dtype: Any) -> list[np.ndarray] | None:
    up, gate, down = (matrices.get((r, -1)) for r in ("mlp_up", "mlp_gate", "mlp_down"))
    if up is None or down is None:
        return None
    parts = [up] + ([gate] if gate is not None else []) + [down]
    scaled = scaled_layers(parts, dtype)
    first = np.maximum(scaled[0], scaled[1]) if gate is not None else scaled[0]
    return [first, scaled[-1]]


def _head_paths(matrices: dict[tuple[str, int], np.ndarray], paths: Sequence[str],
                dtype: Any) -> Iterator[tuple[str, int, list[np.ndarray]]]:
    heads = sorted(h for r, h in matrices if r == "q" and h >= 0)
    kv = sorted(h for r, h in matrices if r == "k" and h >= 0)
    if not heads or not kv or len(heads) % len(kv):
        return
    share = len(heads) // len(kv)  # query heads per key/value head (grouped-query attention)
    for h in heads:
        g = h // share
        v, o, q, k = (matrices.get(key) for key in (("v", g), ("o", h), ("q", h), ("k", g)))
        if "vo" in paths and v is not None and o is not None:
            yield "vo", h, scaled_layers([v, o], dtype)
        if "qk" in paths and q is not None and k is not None:
            yield "qk", h, scaled_layers([q, k.T], dtype)


def block_paths(units: Sequence[Unit], p: float = 2.0, dtype: Any = np.float32,
                paths: Sequence[str] = PATHS) -> list[PathResult]:
    """DGP of the paths of one block of one checkpoint, from its planned units (per head)."""
    if not units:
        return []
    first = units[0]
    matrices: dict[tuple[str, int], np.ndarray] = {}
    for unit in units:
        data = read_tensor(unit.tensor)
        for spec in unit.specs:
            if spec.expert < 0:
                matrices[(spec.role, spec.head)] = _as_float(cut(data, spec), dtype)
    out = []
    block = first.specs[0].block

    def add(path: str, head: int, scaled: list[np.ndarray]) -> None:
        result = folded_persistence(fold(scaled, dtype), p)
        rows, cols = result.matrix.shape
        out.append(PathResult(first.run, first.checkpoint.name, first.checkpoint.step, block, path, head, rows,
                              cols, float(result.np), float(result.normalized_np)))

    mlp = _mlp_layers(matrices, dtype) if "mlp" in paths else None
    if mlp is not None:
        add("mlp", -1, mlp)
    for path, head, scaled in _head_paths(matrices, paths, dtype):
        add(path, head, scaled)
    return out


def _blocks(units: Sequence[Unit]) -> dict[tuple[str, str, int], list[Unit]]:
    grouped: dict[tuple[str, str, int], list[Unit]] = {}
    for unit in units:
        block = unit.specs[0].block if unit.specs else -1
        if block >= 0:
            grouped.setdefault((unit.run, unit.checkpoint.name, block), []).append(unit)
    return grouped


def run_paths(inputs: Sequence[str | Path], out: str | Path, p: float = 2.0, dtype: Any = np.float32,
              paths: Sequence[str] = PATHS, progress: Callable[[str], None] | None = None) -> Path:
    """DGP of every block's paths at every checkpoint of ``inputs`` (model folders, files or runs), appended to
    ``out/dgp.csv`` block by block: an interrupted run keeps what it wrote and, started again, measures only the
    blocks that are missing. A block whose tensors cannot be read is reported through ``progress`` and skipped.
    Returns the table's path."""
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    table = target / RESULTS_FILE
    names = [f.name for f in fields(PathResult)]
    done: set[tuple[str, str, int]] = set()
    if table.exists():
        with table.open() as f:
            done = {(r["run"], r["checkpoint"], int(r["block"])) for r in csv.DictReader(f)}
    planned = plan_units(inputs, PlanOptions(per_head=True))
    say = progress or (lambda message: print(message, file=sys.stderr))
    for problem in planned.problems:
        say(f"skipped {problem}")
    blocks = _blocks(planned.units)
    todo = [key for key in blocks if key not in done]
    with table.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        if not done:
            writer.writeheader()
        for number, key in enumerate(todo, 1):
            try:
                rows = block_paths(blocks[key], p, dtype, paths)
            except (OSError, ValueError, KeyError) as error:
                say(f"{key[0]} {key[1]} block {key[2]}: not measured: {error}")
                continue
            writer.writerows(asdict(r) for r in rows)
            f.flush()
            say(f"DGP: block {key[2]} of {key[1]} ({number}/{len(todo)}): {len(rows)} paths")
    return table
