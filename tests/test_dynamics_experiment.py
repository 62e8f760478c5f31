"""The dynamics studies' quick profiles end to end (trained runs saved by transformers, the independent markers
measured on exactly the saved weights, the CLI's analysis, devinterp and WeightWatcher on the same folders), and the
study's statistics against independent computations."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "dynamics"))
import grokking  # noqa: E402
import induction  # noqa: E402
import study  # noqa: E402
import tables  # noqa: E402


@pytest.mark.slow
def test_induction_quick_profile(tmp_path: Path) -> None:
    import transformers as tf

    runs = induction.main(["--profile", "quick", "--out", str(tmp_path)])
    profile = induction.PROFILES["quick"]
    assert len(runs) == len(profile.widths) * (len(profile.seeds) + 1)
    marks = pd.read_csv(tmp_path / "markers.csv")
    assert len(marks) == len(runs) * len(profile.checkpoints())
    heads = pd.read_csv(tmp_path / "heads.csv")
    assert len(heads) == len(runs) * 2 * profile.heads * 4 and set(heads["block"]) == {0, 1}
    scores = marks[[c for c in marks.columns if c.startswith(("prefix_", "prev_"))]].to_numpy()
    assert scores.min() >= 0 and scores.max() <= 1
    # The markers were measured on the weights that were saved: the loss of the last checkpoint, recomputed from
    # the folder transformers wrote, on the same probe, is the recorded one.
    name = runs["run"].iloc[0]
    last = marks[marks["run"] == name].iloc[-1]
    model = tf.LlamaForCausalLM.from_pretrained(tmp_path / "checkpoints" / name / f"checkpoint-{int(last['step'])}")
    probe = induction.batch_of(np.random.default_rng(99), 128, profile).tokens
    with torch.no_grad():
        assert float(model(probe, labels=probe).loss) == pytest.approx(last["loss"], rel=1e-5)
    table = pd.read_csv(tmp_path / "np" / "results.csv")
    assert set(table["run"]) == set(runs["run"]) and table["null_np"].notna().all()
    peer = pd.read_csv(tmp_path / "peers.csv")
    assert len(peer) == len(marks) and peer["alpha_attention"].notna().all()
    assert sorted(peer.dropna(subset=["llc"])["step"].unique()) == profile.llc_steps()
    assert np.isfinite(peer["llc"].dropna()).all() and np.isfinite(peer["alpha_mean"]).all()
    assert (tmp_path / "induction.png").stat().st_size > 10_000
    text = tables.induction_tables(tmp_path)  # DYNAMICS.md's tables render from these files
    assert text.count("\n| w32-") == len(runs) and "| q | np |" in text


@pytest.mark.slow
def test_grokking_quick_profile(tmp_path: Path) -> None:
    import transformers as tf

    runs = grokking.main(["--profile", "quick", "--out", str(tmp_path)])
    profile = grokking.PROFILES["quick"]
    marks = pd.read_csv(tmp_path / "markers.csv")
    assert len(marks) == len(profile.seeds) * len(profile.checkpoints())
    # Test accuracy recomputed from the saved folder, by plain argmax over the pairs held out.
    name, step = runs["run"].iloc[0], profile.checkpoints()[-1]
    model = tf.LlamaForCausalLM.from_pretrained(tmp_path / "checkpoints" / name / f"checkpoint-{step}")
    data = grokking.data_for(profile, profile.seeds[0])
    held_out = data.tokens[data.test]
    with torch.no_grad():
        guess = model(held_out[:, :3]).logits[:, -1].argmax(-1)
    recorded = marks[(marks["run"] == name) & (marks["step"] == step)]["test_acc"].item()
    assert float((guess == held_out[:, 3]).double().mean()) == pytest.approx(recorded)
    assert int(len(data.train)) + int(len(data.test)) == profile.p**2
    series = pd.read_csv(tmp_path / "series.csv")
    assert len(series) == len(runs) * (4 * 4 + 3)  # every head's q/k/v/o and the three MLP maps
    peer = pd.read_csv(tmp_path / "peers.csv")
    assert len(peer) == len(marks) and np.isfinite(peer["alpha_mean"]).all()
    assert np.isfinite(peer["llc"].dropna()).all() and peer["llc"].notna().sum() == len(profile.seeds)
    assert (tmp_path / "grokking.png").stat().st_size > 10_000
    text = tables.grokking_tables(tmp_path)
    assert text.count("\n| p23-") == len(runs) and "| mlp_up | np |" in text


def test_every_row_repeats_a_span_of_varying_length_at_varying_offsets() -> None:
    """The repeats can only be found by content: span lengths and the offset between the copies vary by row, and
    the induction targets (the key after the earlier occurrence) hold the token that follows each query."""
    profile = induction.PROFILES["full"]
    batch = induction.batch_of(np.random.default_rng(3), 400, profile)
    tokens = batch.tokens.numpy()
    for r in range(400):
        a, b, n = batch.first[r], batch.second[r], batch.span[r]
        assert profile.spans[0] <= n <= profile.spans[1] and a + n <= b and b + n <= profile.length
        np.testing.assert_array_equal(tokens[r, b:b + n], tokens[r, a:a + n])
    assert len(set(batch.span)) > 5 and len(set(batch.second - batch.first)) > 10
    rows, queries, keys = batch.repeat_positions()
    np.testing.assert_array_equal(tokens[rows, queries + 1], tokens[rows, keys])


def test_kjv_rows_are_windows_of_the_corpus_with_one_passage_copied() -> None:
    """On the text profile every row is a window of the KJV characters, except the second copy, which holds the
    first; the model's vocabulary is the corpus's alphabet."""
    profile = induction.with_vocabulary(induction.PROFILES["kjv-full"])
    corpus, alphabet = induction.kjv_characters()
    assert profile.vocab == alphabet == corpus.max() + 1
    batch = induction.batch_of(np.random.default_rng(4), 200, profile)
    tokens = batch.tokens.numpy()
    assert tokens.shape == (200, profile.length) and tokens.max() < alphabet
    text = corpus.tobytes()
    for r in range(200):
        a, b, n = batch.first[r], batch.second[r], batch.span[r]
        np.testing.assert_array_equal(tokens[r, b:b + n], tokens[r, a:a + n])
        assert profile.spans[0] <= n <= profile.spans[1]
        # outside the copy the row is text: the part before it occurs in the corpus as it is
        assert tokens[r, :b].tobytes() in text
    assert len(set(batch.second - batch.first)) > 5


def test_fourier_share_of_a_one_frequency_embedding() -> None:
    import transformers as tf

    profile = grokking.PROFILES["quick"]
    model = grokking.model_for(profile, 0)
    assert isinstance(model, tf.PreTrainedModel)
    p = profile.p
    residues = np.arange(p)
    wave = np.stack([np.cos(2 * np.pi * 3 * residues / p), np.sin(2 * np.pi * 3 * residues / p)], axis=1)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        weight.zero_()
        weight[:p, :2] = torch.from_numpy(wave)
    assert grokking.fourier_share(model, p, top=1) == pytest.approx(1.0)
    with torch.no_grad():
        weight[:p] = torch.randn(p, weight.shape[1], generator=torch.Generator().manual_seed(0))
    assert grokking.fourier_share(model, p, top=1) < 0.5


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=12), st.lists(st.floats(-5, 5), min_size=1, max_size=12))
def test_auroc_is_the_share_of_ordered_pairs(positives: list[float], negatives: list[float]) -> None:
    # The slow, obviously correct version: every (positive, negative) pair, ties counted half.
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p in positives for n in negatives]
    scores = np.array(positives + negatives)
    labels = np.array([True] * len(positives) + [False] * len(negatives))
    assert study.auroc(scores, labels) == pytest.approx(np.mean(pairs))


def test_auroc_against_scikit_learn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.3
    scores = rng.normal(size=200) + labels
    assert study.auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(study.auroc(scores, np.ones(200, dtype=bool)))


def test_nearest_change_and_transition_moves() -> None:
    assert study.nearest([40, 120, 130], 125, 25) == pytest.approx(-5.0)
    assert np.isnan(study.nearest([40], 125, 25))
    # A head that jumps by 1 at the transition over noise of known size, and one that does not move.
    rng = np.random.default_rng(1)
    steps = np.arange(0, 300, 5)
    rows = []
    for head, jump in ((0, 1.0), (1, 0.0)):
        values = 0.01 * rng.normal(size=len(steps)) + jump * (steps >= 150)
        rows += [{"run": "r", "block": 1, "role": "k", "head": head, "step": int(s), "normalized_np": v,
                  "null_normalized_np": 0.5, "structural": v - 0.5, "rms": 1.0} for s, v in zip(steps, values)]
    moves = study.transition_moves(pd.DataFrame(rows), {"r": 150.0}, 25)
    jumping, still = moves[moves["head"] == 0].iloc[0], moves[moves["head"] == 1].iloc[0]
    assert jumping["np_move"] > 20 and abs(still["np_move"]) < 5
    assert np.isnan(jumping["null_move"]) and np.isnan(jumping["rms_move"])  # constant series: no noise scale
