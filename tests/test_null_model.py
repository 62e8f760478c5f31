"""The null model (NP of a layer's entries shuffled) against shuffling the matrix and measuring it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from neural_persistence.core.compute import layer_tree
from neural_persistence.core.null import _wanted, null_tree_values, top_keys
from neural_persistence.core.weights import to_keys


def _np(values: np.ndarray, scale: float) -> float:
    """NP (p = 2, essential point included) from raw tree values, written out: the oracle's own arithmetic."""
    deaths = values / scale
    deaths = deaths[deaths != 1.0]
    return float(np.sqrt(np.sum((1.0 - deaths) ** 2) + 1.0))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(n=st.integers(1, 40), m=st.integers(1, 40), levels=st.sampled_from([0, 3, 50]), seed=st.integers(0, 2**32 - 1))
def test_a_null_sample_is_exactly_the_tree_of_the_permuted_layer(n: int, m: int, levels: int, seed: int) -> None:
    """Rebuild the permuted layer the sample stands for (its top values at the cells the sample drew, the rest
    shuffled into the other cells) and measure it with the engine: the same tree values, ties included."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, m)).astype(np.float32)
    if levels:
        matrix = (np.round(matrix * levels) / levels).astype(np.float32)  # many ties
    keys = to_keys(matrix)
    (tree,) = null_tree_values(keys, 1, seed=seed)
    child = np.random.SeedSequence(seed).spawn(1)[0]
    draw = np.random.default_rng(child)
    total = n * m
    top = top_keys(keys, min(total, _wanted(n, m)))
    cells = draw.choice(total, len(top), replace=False) if len(top) < total else draw.permutation(total)
    values = np.abs(matrix).ravel()
    order = np.argsort(-values, kind="stable")
    permuted = np.empty(total, np.float32)
    permuted[cells] = values[order[: len(top)]]
    rest = np.setdiff1d(np.arange(total), cells)
    permuted[rest] = rng.permutation(values[order[len(top):]])
    expected = layer_tree(permuted.reshape(n, m)).values
    np.testing.assert_array_equal(np.sort(tree)[::-1], expected)


@pytest.mark.parametrize("shape", [(8, 12), (32, 6), (48, 48)])
def test_null_samples_follow_the_distribution_of_shuffled_layers(shape: tuple[int, int]) -> None:
    """Over many seeds: the same mean NP within sampling error, and a two-sample test cannot tell them apart."""
    rng = np.random.default_rng(sum(shape))
    matrix = rng.standard_t(3, size=shape)  # heavy tails: NP then depends on where the large weights sit
    scale = float(np.abs(matrix).max())
    fast = [_np(t, scale) for t in null_tree_values(to_keys(matrix), 400, seed=1)]
    slow = [_np(layer_tree(rng.permutation(matrix.ravel()).reshape(shape)).values, scale) for _ in range(400)]
    error = np.sqrt(np.var(fast) / 400 + np.var(slow) / 400)
    assert abs(np.mean(fast) - np.mean(slow)) < 4 * error
    assert stats.ks_2samp(fast, slow).pvalue > 1e-3
    original = _np(layer_tree(matrix).values, scale)
    assert np.std(fast) > 0 and original == pytest.approx(original)  # sanity: a spread, a finite original


def test_more_samples_extend_the_same_sequence_and_the_rare_second_round_is_exact() -> None:
    rng = np.random.default_rng(3)
    keys = to_keys(rng.normal(size=(20, 30)))
    four = null_tree_values(keys, 4, seed=9)
    eight = null_tree_values(keys, 8, seed=9)
    for a, b in zip(four, eight[:4]):
        np.testing.assert_array_equal(a, b)
    # Too few top values for the graph to connect: the rest of the layer is drawn, and the tree is still whole.
    matrix = rng.normal(size=(60, 70))
    keys = to_keys(matrix)
    scale = float(np.abs(matrix).max())
    forced = [_np(t, scale) for t in null_tree_values(keys, 300, seed=2, first=100)]
    assert all(len(t) == 60 + 70 - 1 for t in null_tree_values(keys, 3, seed=2, first=100))
    slow = [_np(layer_tree(rng.permutation(matrix.ravel()).reshape(60, 70)).values, scale) for _ in range(300)]
    assert stats.ks_2samp(forced, slow).pvalue > 1e-3
