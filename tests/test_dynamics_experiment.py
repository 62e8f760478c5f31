"""The induction-heads study's quick profile end to end: trained runs saved by transformers, the independent
markers measured on exactly the saved weights, the CLI's analysis joined per head."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "dynamics"))
import induction  # noqa: E402


def test_quick_profile(tmp_path: Path) -> None:
    import transformers as tf

    runs = induction.main(["--profile", "quick", "--out", str(tmp_path)])
    profile = induction.PROFILES["quick"]
    assert len(runs) == len(profile["widths"]) * (len(profile["seeds"]) + 1)
    marks = pd.read_csv(tmp_path / "markers.csv")
    heads = pd.read_csv(tmp_path / "heads.csv")
    assert len(heads) == len(runs) * 2 * 4 and set(heads["block"]) == {0, 1}
    prefix = marks[[c for c in marks.columns if c.startswith("prefix_")]]
    assert prefix.to_numpy().min() >= 0 and prefix.to_numpy().max() <= 1
    # The markers were measured on the weights that were saved: the loss of the last checkpoint, recomputed from
    # the folder transformers wrote, on the same probe, is the recorded one.
    name = runs["run"].iloc[0]
    last = marks[marks["run"] == name].iloc[-1]
    model = tf.LlamaForCausalLM.from_pretrained(tmp_path / "checkpoints" / name / f"checkpoint-{int(last['step'])}")
    probe = induction.batch_of(np.random.default_rng(99), 64, profile["span"], profile["vocab"])
    with torch.no_grad():
        assert float(model(probe, labels=probe).loss) == pytest.approx(last["loss"], rel=1e-5)
    table = pd.read_csv(tmp_path / "np" / "results.csv")
    assert set(table["run"]) == set(runs["run"]) and table["null_np"].notna().all()
    assert (tmp_path / "induction.png").stat().st_size > 10_000
