"""The authors' own numbers (BorgwardtLab/Neural-Persistence with Aleph), matched to 1e-12."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reference_cases

import neural_persistence as npers

CASES = reference_cases()


@pytest.mark.parametrize("meta,arrays", CASES, ids=[m["name"] for m, _ in CASES])
def test_matches_reference(meta: dict, arrays: dict[str, np.ndarray]) -> None:
    layers = [arrays[k] for k in meta["layer_keys"]]
    p2 = npers.compute(layers)
    p1 = npers.compute(layers, p=1)
    for ours, ours_p1, ref in zip(p2.layers, p1.layers, meta["layers"]):
        assert ours.np == pytest.approx(ref["np_p2"], rel=1e-12, abs=0)
        assert ours.normalized_np == pytest.approx(ref["np_p2_normalized"], rel=1e-12, abs=0)
        assert ours_p1.np == pytest.approx(ref["np_p1"], rel=1e-12, abs=0)
        assert ours_p1.normalized_np == pytest.approx(ref["derived"]["np_p1_normalized_by_(n-1)"], rel=1e-12)
        assert len(ours.diagram) == ref["n_points"]
        np.testing.assert_allclose(np.sort(ours.diagram.births), ref["diagram_births_sorted"], rtol=1e-12)
        np.testing.assert_allclose(np.sort(ours.diagram.deaths), ref["diagram_deaths_sorted"], rtol=1e-12, atol=0)
        np.testing.assert_allclose(np.sort(ours.diagram.persistence), ref["persistence_sorted"], rtol=1e-12)
    assert p2.mean_normalized_np == pytest.approx(meta["global"]["mean_normalized_np"], rel=1e-12, abs=0)
    assert max(layer.scale for layer in p2.layers) == meta["W_global_max_abs"]


@pytest.mark.parametrize("meta,arrays", CASES, ids=[m["name"] for m, _ in CASES])
def test_textbook_definition_matches_derived_values(meta: dict, arrays: dict[str, np.ndarray]) -> None:
    layers = [arrays[k] for k in meta["layer_keys"]]
    p2 = npers.compute(layers, essential=False)
    p1 = npers.compute(layers, p=1, essential=False)
    for ours, ours_p1, ref in zip(p2.layers, p1.layers, meta["layers"]):
        assert ours.np == pytest.approx(ref["derived"]["np_p2_without_essential"], rel=1e-12)
        assert ours_p1.np == pytest.approx(ref["derived"]["np_p1_without_essential"], rel=1e-12)
