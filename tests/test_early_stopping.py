"""Algorithm 2 on scripted sequences, and the same rule in a plain loop, Lightning and Hugging Face."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import neural_persistence as npers


stop_index = npers.first_stop


def direct_simulation(values: list[float], patience: int, min_delta: float, burn_in: int) -> int | None:
    """Algorithm 2 written out once more, as plainly as possible."""
    best, counter = -np.inf, 0
    for i, v in enumerate(values):
        if i < burn_in:
            continue
        if v > best + min_delta:
            best, counter = v, 0
        else:
            counter += 1
        if counter >= patience:
            return i
    return None


def test_plateau_stops_after_patience() -> None:
    assert stop_index([0.1, 0.2, 0.3, 0.3, 0.3, 0.3], patience=3) == 5


def test_noise_under_delta_counts_as_no_improvement() -> None:
    values = [0.5, 0.501, 0.5005, 0.502, 0.6]
    assert stop_index(values, patience=3, min_delta=0.01) == 3
    assert stop_index(values, patience=3, min_delta=0.0) is None


def test_burn_in_neither_counts_nor_sets_the_best() -> None:
    rule = npers.EarlyStopping(patience=2, burn_in=2)
    for v in [0.9, 0.9, 0.1, 0.2, 0.2, 0.2]:
        rule.step(v)
    assert rule.best == 0.2 and rule.best_index == 3
    assert rule.stopped_at == 5
    assert [c.burn_in for c in rule.history] == [True, True, False, False, False, False]
    assert "stopped at check 5" in rule.reason


def test_restore_best_weights() -> None:
    model = torch.nn.Linear(3, 2)
    rule = npers.EarlyStopping(patience=1, restore_best=True)
    rule.step(model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.mul_(0).add_(1.0)  # all equal: the lowest NP there is, so no improvement
    assert rule.step(model)
    rule.restore_best_weights(model)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, best[k])


def test_accepts_matrices_and_values() -> None:
    rng = np.random.default_rng(0)
    rule = npers.EarlyStopping(patience=1)
    rule.step([rng.normal(size=(5, 4))])
    rule.step(0.0)
    assert rule.should_stop and len(rule.history_frame()) == 2


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="`patience` must be an integer >= 1, got 0"):
        npers.EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="`min_delta` must be a finite number >= 0"):
        npers.EarlyStopping(min_delta=-1)
    with pytest.raises(ValueError, match="`burn_in` must be an integer >= 0"):
        npers.EarlyStopping(burn_in=-2)


def test_state_dict_round_trip() -> None:
    a = npers.EarlyStopping(patience=3)
    for v in [0.1, 0.3, 0.2]:
        a.step(v)
    b = npers.EarlyStopping(patience=3)
    b.load_state_dict(a.state_dict())
    assert [b.step(v) for v in [0.2, 0.2]] == [a.step(v) for v in [0.2, 0.2]]


@given(
    values=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    patience=st.integers(1, 6),
    min_delta=st.sampled_from([0.0, 0.01, 0.1]),
    burn_in=st.integers(0, 5),
)
@settings(max_examples=200, deadline=None)
def test_rule_equals_direct_simulation(values: list[float], patience: int, min_delta: float, burn_in: int) -> None:
    expected = direct_simulation(values, patience, min_delta, burn_in)
    assert stop_index(values, patience=patience, min_delta=min_delta, burn_in=burn_in) == expected


def test_checks_after_the_stop_do_not_move_the_best() -> None:
    rule = npers.EarlyStopping(patience=1)
    for v in [0.5, 0.4, 0.9]:
        rule.step(v)
    assert rule.stopped_at == 1 and rule.best == 0.5 and len(rule.history) == 3
