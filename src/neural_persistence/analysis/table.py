"""The tidy table of an analysis: one row per measured matrix (per head with ``per_head``), any normalization.

Normalizations, applied to the stored raw tree values (the tree does not depend on the scale):

``global``  w_max over all matrices measured in the same checkpoint (the paper's choice);
``layer``   each matrix (or head) by its own max |w|;
``role``    w_max over all matrices of the same role in the same checkpoint.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from ..core.measures import check_p, diagram_from_tree, normalized_np
from ..sources.plan import PlanOptions
from .store import STATISTICS, Store

__all__ = ["NORMALIZATIONS", "COLUMNS", "NULL_COLUMNS", "STATISTICS_COLUMNS", "export", "load_table"]

NORMALIZATIONS = ("global", "layer", "role")
COLUMNS = ["run", "checkpoint", "step", "tokens", "tensor", "block", "role", "head", "expert", "rows", "cols", "np",
           "normalized_np", "max_abs", "scale"]
#: Columns added when the analysis measured the null model (``analyze --null K``): the mean and standard deviation
#: of NP over the K shuffles of the matrix, under the same normalization and p, the mean's normalized value,
#: ``structural_np`` = (np - null_np) / null_np_std, and K.
NULL_COLUMNS = ["null_np", "null_np_std", "null_normalized_np", "structural_np", "null_samples"]
#: Columns added with ``analyze --statistics`` (see neural_persistence.core.baselines).
STATISTICS_COLUMNS = list(STATISTICS)


def load_table(
    out: str | Path, *, normalization: str = "global", p: float = 2.0, essential: bool = True,
    per_head: bool | None = None, include_embeddings: bool | None = None,
) -> Any:
    """The tidy results table of the analysis in ``out`` as a pandas DataFrame (columns :data:`COLUMNS`).

    One row per measured matrix; ``head`` and ``expert`` are -1 where there is none. Results measured with
    different options are never mixed: ``per_head`` and ``include_embeddings`` pick the analysis when the folder
    holds several (by default the per-head one if present, then the one without embeddings).
    """
    import pandas as pd

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"`normalization` can be one of {NORMALIZATIONS}, got {normalization!r}")
    p = check_p(p)
    with Store(out, write=False) as store:
        sets = store.option_sets()
        if not sets:
            return pd.DataFrame(columns=COLUMNS)
        wanted = _pick_options(sets, per_head, include_embeddings, out)
        trees = list(store.trees(wanted))
        nulls = store.null_trees(wanted)
        statistics = store.statistics(wanted)
    frame = pd.DataFrame(
        [(t.run, t.checkpoint, t.step, t.tokens, t.tensor, t.block, t.role, t.head, t.expert, t.rows, t.cols,
          t.max_abs) for t in trees],
        columns=["run", "checkpoint", "step", "tokens", "tensor", "block", "role", "head", "expert", "rows", "cols",
                 "max_abs"],
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
    columns = list(COLUMNS)
    if nulls:
        rows = [_null_row(nulls.get((t.run, t.checkpoint, t.tensor, t.role, t.head, t.expert)), t, float(s), float(v),
                          essential, p) for t, s, v in zip(trees, frame["scale"], frame["np"])]
        frame[NULL_COLUMNS] = pd.DataFrame(rows, columns=NULL_COLUMNS, index=frame.index)
        frame["null_samples"] = frame["null_samples"].astype("Int64")
        columns += NULL_COLUMNS
    if statistics:
        nothing = (np.nan,) * len(STATISTICS)
        rows = [statistics.get((t.run, t.checkpoint, t.tensor, t.role, t.head, t.expert), nothing) for t in trees]
        frame[STATISTICS_COLUMNS] = pd.DataFrame(rows, columns=STATISTICS_COLUMNS, index=frame.index)
        columns += STATISTICS_COLUMNS
    frame = frame[columns]
    frame.attrs["options"] = wanted  # which analysis of the folder this is (report and compare say so)
    return frame


def _null_row(found: Any, tree: Any, scale: float, value: float, essential: bool, p: float) -> tuple:
    """The null columns of one matrix: NP of each shuffle under the matrix's scale, then mean, std, ..."""
    if found is None or scale == 0:
        return (np.nan, np.nan, np.nan, np.nan, None)
    _, samples = found
    values = np.array([diagram_from_tree(sample, scale, essential).norm(p) for sample in samples])
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else np.nan
    z = (value - mean) / std if std > 0 else np.nan
    return (mean, std, normalized_np(mean, (tree.rows, tree.cols), p), z, len(values))


def _pick_options(sets: list[str], per_head: bool | None, include_embeddings: bool | None, out: str | Path) -> str:
    """The stored option set asked for (None: no preference): per head first, then without embeddings."""
    def parse(key: str) -> dict[str, bool]:
        return {k: v == "1" for k, v in (part.split("=") for part in key.split(";"))}

    fits = [k for k in sets if (per_head is None or parse(k).get("per_head") == per_head)
            and (include_embeddings is None or parse(k).get("embeddings") == include_embeddings)]
    if not fits:
        asked = PlanOptions(bool(per_head), bool(include_embeddings)).key
        raise ValueError(f"{out} holds no results with {asked}; it has {sets}")
    return sorted(fits, key=lambda k: (not parse(k).get("per_head"), parse(k).get("embeddings")))[0]


def export(out: str | Path, fmt: str = "csv", **options: Any) -> Path:
    """Write ``results.csv`` or ``results.parquet`` into ``out``; returns its path. The columns of
    :func:`load_table`, then ``normalization``, ``p``, ``per_head`` and ``include_embeddings``.

    The file is written beside its final name and renamed over it, so a killed export or a full disk leaves the
    previous table whole, and concurrent exports into one folder each leave a whole table."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"`fmt` can be 'csv' or 'parquet', got {fmt!r}")
    frame = load_table(out, **options)
    chosen = dict(part.split("=") for part in frame.attrs["options"].split(";"))
    # The file says what it holds: a table read on its own cannot be mistaken for another normalization.
    frame = frame.assign(normalization=options.get("normalization", "global"), p=float(options.get("p", 2.0)),
                         per_head=chosen["per_head"] == "1", include_embeddings=chosen["embeddings"] == "1")
    path = Path(out) / f"results.{fmt}"
    # A name of its own per export: writers sharing ``out`` (each exports when it ends) must not rename each
    # other's file away.
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        if fmt == "csv":
            frame.to_csv(partial, index=False)
        else:
            frame.to_parquet(partial, index=False)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
