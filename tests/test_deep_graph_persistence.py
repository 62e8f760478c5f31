"""Deep graph persistence against naive oracles: a triple loop for the bottleneck product, the paper's recipe
written with numpy broadcasting for the whole measure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import minimum_spanning_tree

import neural_persistence as npers
from neural_persistence.core.dgp import bottleneck_product


def _triple_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[1]))
    for i in range(a.shape[0]):
        for k in range(b.shape[1]):
            out[i, k] = max(min(a[i, j], b[j, k]) for j in range(a.shape[1]))
    return out


@settings(max_examples=80, deadline=None, derandomize=True)
@given(n=st.integers(1, 9), m=st.integers(1, 9), c=st.integers(1, 9), ties=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_the_bottleneck_product_is_the_triple_loop(n: int, m: int, c: int, ties: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(size=(n, m)), rng.uniform(size=(m, c))
    if ties:
        a, b = np.round(a * 3) / 3, np.round(b * 3) / 3
    np.testing.assert_array_equal(bottleneck_product(a, b), _triple_loop(a, b))


def _recipe(weights: list[np.ndarray]) -> float:
    """The published recipe, spelled out: z-score, |.|, divide by the global max, fold by broadcasting
    min then max over the middle axis, then NP of the result's maximum spanning tree (scipy) at scale 1."""
    z = [np.abs((w - w.mean()) / w.std()).T for w in weights]
    top = max(x.max() for x in z)
    z = [x / top for x in z]
    s = z[0]
    for nxt in z[1:]:
        s = np.minimum(s[:, :, None], nxt[None, :, :]).max(axis=1)
    n, m = s.shape
    graph = np.zeros((n + m, n + m))
    graph[:n, n:] = -(s + 1e-300)  # a minimum spanning tree of negated weights is a maximum one; zero means no edge
    tree = -minimum_spanning_tree(graph).data
    deaths = tree[tree != 1.0]
    return float(np.sqrt(np.sum((1 - deaths) ** 2) + 1.0))


def test_dgp_of_a_small_mlp_follows_the_recipe_and_takes_torch_modules() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(7, 11), torch.nn.ReLU(), torch.nn.Linear(11, 5), torch.nn.ReLU(),
                              torch.nn.Linear(5, 3))
    weights = [m.weight.detach().double().numpy() for m in mlp if isinstance(m, torch.nn.Linear)]
    result = npers.deep_graph_persistence(mlp)
    assert result.matrix.shape == (7, 3)
    assert result.np == pytest.approx(_recipe(weights), rel=1e-12)
    assert result.normalized_np == pytest.approx(result.np / np.sqrt(7 + 3 - 1), rel=1e-12)
    assert npers.deep_graph_persistence(weights).np == result.np
    with pytest.raises(ValueError, match="not a chain"):
        npers.deep_graph_persistence([weights[0], weights[0]])
    with pytest.raises(ValueError, match="constant"):
        npers.deep_graph_persistence([np.ones((3, 4))])
