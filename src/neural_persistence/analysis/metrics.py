"""Training metrics beside neural persistence: loss and evaluation curves on the same step axis.

From the ``log_history`` of ``trainer_state.json`` (what the Hugging Face Trainer, and the demo, write into each
checkpoint: the last checkpoint of a run holds the whole history), or from a CSV file of per-step columns
(``--metrics FILE.csv``: a ``step`` column and any others, one row per logged step).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .store import Store

__all__ = ["metrics_from_csv", "training_metrics"]

#: Logged values that are bookkeeping, not curves to plot.
_NOT_CURVES = {"step", "epoch", "global_step", "total_flos", "num_input_tokens_seen", "train_runtime",
               "train_samples_per_second", "train_steps_per_second", "eval_runtime", "eval_samples_per_second",
               "eval_steps_per_second", "learning_rate", "grad_norm"}


def training_metrics(out: str | Path) -> Any:
    """Long table (run, step, metric, value) of every run's ``trainer_state.json`` log history (empty if none).

    The history of each run's last checkpoint (by step) is read; a history that cannot be read is skipped."""
    import pandas as pd

    rows: list[tuple[str, int, str, float]] = []
    with Store(out, write=False) as store:
        checkpoints = store.db.execute(
            "SELECT run, path FROM checkpoints c WHERE step = (SELECT MAX(step) FROM checkpoints d WHERE d.run = c.run)"
        ).fetchall()
    for run, path in checkpoints:
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        try:
            history = json.loads((folder / "trainer_state.json").read_text()).get("log_history", [])
        except (OSError, ValueError, AttributeError):
            continue
        for entry in history if isinstance(history, list) else []:
            if not isinstance(entry, dict) or not isinstance(entry.get("step"), (int, float)):
                continue
            for name, value in entry.items():
                if name not in _NOT_CURVES and isinstance(value, (int, float)) and math.isfinite(value):
                    rows.append((run, int(entry["step"]), name, float(value)))
    return pd.DataFrame(rows, columns=["run", "step", "metric", "value"])


def metrics_from_csv(path: str | Path, run: str = "") -> Any:
    """Long table (run, step, metric, value) of a CSV with a ``step`` column and per-step metric columns."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "step" not in frame.columns:
        raise ValueError(f"{path}: a metrics file needs a 'step' column; it has {list(frame.columns)}")
    numeric = [c for c in frame.columns if c != "step" and pd.api.types.is_numeric_dtype(frame[c])]
    if not numeric:
        raise ValueError(f"{path}: no numeric column besides 'step'")
    long = frame.melt(id_vars="step", value_vars=numeric, var_name="metric", value_name="value").dropna()
    return long.assign(run=run)[["run", "step", "metric", "value"]]
