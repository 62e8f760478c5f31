"""The tidy table of an analysis: one row per measured matrix (per head with ``per_head``), any normalization.

Normalizations, applied to the stored raw tree values (the tree does not depend on the scale):

``global``  w_max over all matrices measured in the same checkpoint (the paper's choice);
``layer``   each matrix (or head) by its own max |w|;
``role``    w_max over all matrices of the same role in the same checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.measures import check_p, diagram_from_tree, normalized_np
from .store import DB_NAME, Store

__all__ = ["NORMALIZATIONS", "COLUMNS", "export", "load_table"]

NORMALIZATIONS = ("global", "layer", "role")
COLUMNS = ["run", "checkpoint", "step", "tokens", "tensor", "block", "role", "head", "rows", "cols", "np", "normalized_np",
           "max_abs", "scale"]


def load_table(
    out: str | Path, *, normalization: str = "global", p: float = 2.0, essential: bool = True,
    per_head: bool | None = None,
) -> Any:
    """The tidy results table of the analysis in ``out`` as a pandas DataFrame (columns :data:`COLUMNS`).

    ``per_head`` picks the per-head or the whole-matrix results when the folder holds both; by default the
    per-head ones if present.
    """
    import pandas as pd

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` can be one of {NORMALIZATIONS}, got {normalization!r}")
    p = check_p(p)
    if not (Path(out) / DB_NAME).is_file():
        raise FileNotFoundError(f"{out}: no {DB_NAME} here; run `neural-persistence analyze ... --out {out}` first")
    with Store(out) as store:
        sets = store.option_sets()
        if not sets:
            return pd.DataFrame(columns=COLUMNS)
        wanted = "per_head=1" if (per_head or (per_head is None and "per_head=1" in sets)) else "per_head=0"
        if wanted not in sets:
            raise ValueError(f"{out} holds no results with {wanted}; it has {sets}")
        trees = list(store.trees(wanted))
    frame = pd.DataFrame(
        [(t.run, t.checkpoint, t.step, t.tokens, t.tensor, t.block, t.role, t.head, t.rows, t.cols, t.max_abs)
         for t in trees],
        columns=["run", "checkpoint", "step", "tokens", "tensor", "block", "role", "head", "rows", "cols", "max_abs"],
    )
    if normalization == "global":
        scale = frame.groupby(["run", "checkpoint"])["max_abs"].transform("max")
    elif normalization == "role":
        scale = frame.groupby(["run", "checkpoint", "role"])["max_abs"].transform("max")
    else:
        scale = frame["max_abs"]
    frame["scale"] = scale.to_numpy()
    values, normalized = [], []
    for t, s in zip(trees, frame["scale"]):
        if s == 0:
            values.append(np.nan)
            normalized.append(np.nan)
            continue
        value = diagram_from_tree(t.tree, float(s), essential).norm(p)
        values.append(value)
        normalized.append(normalized_np(value, (t.rows, t.cols), p))
    frame["np"] = values
    frame["normalized_np"] = normalized
    frame["step"] = frame["step"].astype("Int64")
    frame["tokens"] = frame["tokens"].astype("Int64")
    return frame[COLUMNS]


def export(out: str | Path, fmt: str = "csv", **options: Any) -> Path:
    """Write ``results.csv`` or ``results.parquet`` into ``out``; returns its path."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"`fmt` can be 'csv' or 'parquet', got {fmt!r}")
    frame = load_table(out, **options)
    path = Path(out) / f"results.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
