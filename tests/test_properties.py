"""Properties neural persistence must have whatever the weights (Rieck et al. 2019, Section 4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import reference_np

import neural_persistence as npers


@st.composite
def networks(draw: st.DrawFn) -> list[np.ndarray]:
    widths = draw(st.lists(st.integers(1, 25), min_size=2, max_size=5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    decimals = draw(st.sampled_from([None, 1]))
    layers = [rng.normal(size=(a, b)) * rng.uniform(0.1, 3) for a, b in zip(widths, widths[1:])]
    return [np.round(x, decimals) if decimals is not None else x for x in layers]


def _nonzero(layers: list[np.ndarray]) -> bool:
    return any(np.abs(x).max() > 0 for x in layers)


@given(layers=networks(), p=st.sampled_from([1.0, 2.0, 3.5]))
@settings(max_examples=60, deadline=None)
def test_compute_equals_reference_definition(layers: list[np.ndarray], p: float) -> None:
    if not _nonzero(layers):
        return
    res = npers.compute(layers, p=p)
    nps, norms = reference_np(layers, p)
    np.testing.assert_allclose(res.np, nps, rtol=1e-12)
    np.testing.assert_allclose(res.normalized_np, norms, rtol=1e-12)
    assert res.mean_normalized_np == pytest.approx(np.mean(norms), rel=1e-12)


@given(layers=networks(), seed=st.integers(0, 1000), factor=st.floats(1e-3, 1e3))
@settings(max_examples=60, deadline=None)
def test_invariances(layers: list[np.ndarray], seed: int, factor: float) -> None:
    """Row/column permutations, transposition and a positive global scale leave every NP unchanged."""
    if not _nonzero(layers):
        return
    rng = np.random.default_rng(seed)
    base = npers.compute(layers).np
    permuted = [x[rng.permutation(x.shape[0])][:, rng.permutation(x.shape[1])] for x in layers]
    np.testing.assert_array_equal(npers.compute(permuted).np, base)
    np.testing.assert_array_equal(npers.compute([x.T for x in layers]).np, base)
    np.testing.assert_allclose(npers.compute([x * factor for x in layers]).np, base, rtol=1e-12)


@given(layers=networks(), p=st.sampled_from([1.0, 2.0, 4.0]))
@settings(max_examples=60, deadline=None)
def test_bounds_and_theorem_2(layers: list[np.ndarray], p: float) -> None:
    """0 <= NP <= (n + m)^(1/p); for finite points ||1 - a||_p <= NP <= ||1 - b||_p (Theorem 2), where a are
    the n + m - 1 largest and b the n + m - 1 smallest normalized edge values."""
    if not _nonzero(layers):
        return
    with_essential = npers.compute(layers, p=p)
    finite = npers.compute(layers, p=p, essential=False)
    w_max = with_essential.layers[0].scale
    for layer, x in zip(finite.layers, layers):
        n, m = x.shape
        assert 0 <= with_essential[layer.name].np <= (n + m) ** (1 / p) + 1e-12
        values = np.sort(np.abs(x).ravel() / w_max)
        k = n + m - 1
        lower = np.linalg.norm(1 - values[-k:], ord=p)
        upper = np.linalg.norm(1 - values[:k], ord=p)
        assert lower - 1e-12 <= layer.np <= upper + 1e-12


def test_layer_normalization_divides_each_layer_by_its_own_max() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 4)), 10 * rng.normal(size=(4, 3))
    res = npers.compute([a, b], normalization="layer")
    assert res.layers[0].np == npers.compute([a]).layers[0].np
    assert res.layers[1].np == npers.compute([b]).layers[0].np
    assert res.layers[0].scale == np.abs(a).max()


def test_zero_layer_inside_nonzero_network() -> None:
    res = npers.compute({"zero": np.zeros((3, 4)), "live": np.ones((4, 2))})
    zero = res["zero"]
    np.testing.assert_array_equal(zero.diagram.deaths, np.zeros(3 + 4))  # 6 tree edges at 0, and the essential
    assert zero.np == pytest.approx(np.sqrt(7))


def test_dict_names_and_frame() -> None:
    rng = np.random.default_rng(1)
    res = npers.compute({"fc1": rng.normal(size=(6, 5)), "fc2": rng.normal(size=(5, 2))}, p=1)
    frame = res.to_frame()
    assert list(frame["layer"]) == ["fc1", "fc2"]
    assert list(frame["rows"]) == [6, 5] and list(frame["cols"]) == [5, 2]
    np.testing.assert_array_equal(frame["normalized_np"], res.normalized_np)
    assert res.mean_normalized_np == pytest.approx(frame["normalized_np"].mean())


def test_layer_diagram_scale() -> None:
    x = np.array([[1.0, -2.0], [0.5, 4.0]])
    own = npers.layer_diagram(x)
    np.testing.assert_allclose(own.deaths, [0.5, 0.25, 0.0])  # 4/4 dropped (diagonal), 2/4, 1/4, essential
    scaled = npers.layer_diagram(x, scale=8.0, essential=False)
    np.testing.assert_allclose(scaled.deaths, [0.5, 0.25, 0.125])


def test_p_infinity_is_the_largest_persistence() -> None:
    x = np.array([[1.0, -2.0], [0.5, 4.0]])
    assert npers.compute([x], p=np.inf).layers[0].np == 1.0
    assert npers.compute([x], p=np.inf, essential=False).layers[0].np == 0.75


def test_with_bias_is_the_reference_layout() -> None:
    w = np.arange(6.0).reshape(2, 3)  # torch layout (out=2, in=3)
    b = np.array([7.0, 8.0])
    stacked = npers.with_bias(w, b)
    np.testing.assert_array_equal(stacked, [[0, 3], [1, 4], [2, 5], [7, 8]])
    np.testing.assert_array_equal(npers.with_bias(w.T, b, layout="in_out"), stacked)
    with pytest.raises(ValueError, match="bias must have shape"):
        npers.with_bias(w, np.ones(3))
