"""Early stopping on neural persistence, without validation data (Rieck et al. 2019, Algorithm 2).

At every check the mean normalized NP ``P'`` of the network is compared with the best value ``P`` so far: if
``P' > P + min_delta`` it becomes the best and the counter resets, otherwise the counter grows; training stops when
the counter reaches ``patience``. The first ``burn_in`` checks are ignored: they neither count nor set the best.
The decision is the pure function :func:`stopping_decision`; :class:`EarlyStopping` keeps state around it, and
the Lightning and Hugging Face adapters are thin wrappers over the same class.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

from ..measure import compute

__all__ = ["Check", "EarlyStopping", "first_stop", "stopping_decision"]


def stopping_decision(
    value: float, best: float, counter: int, *, patience: int, min_delta: float
) -> tuple[bool, int, bool]:
    """One step of Algorithm 2: ``(improved, new_counter, should_stop)``."""
    improved = value > best + min_delta
    counter = 0 if improved else counter + 1
    return improved, counter, counter >= patience


@dataclass(frozen=True)
class Check:
    """One check: its index (from 0, burn-in included), the value, the best after it, and the counter."""

    index: int
    value: float
    best: float
    counter: int
    burn_in: bool


class EarlyStopping:
    """Stop training when mean normalized NP stops rising by more than ``min_delta`` for ``patience`` checks.

    Parameters
    ----------
    patience
        Checks without improvement before stopping (the paper's g), >= 1.
    min_delta
        Smallest rise that counts as improvement (the paper's delta), >= 0.
    burn_in
        Checks ignored at the start (the paper's b), >= 0.
    restore_best
        Keep a copy of the model's weights at the best check; :meth:`restore_best_weights` puts them back.
    p, normalization, **source_options
        How NP is computed, as in :func:`neural_persistence.compute`.

    Examples
    --------
    >>> stopper = EarlyStopping(patience=3, min_delta=1e-3)
    >>> for epoch in range(100):
    ...     train_one_epoch(model)                     # doctest: +SKIP
    ...     if stopper.step(model):                    # doctest: +SKIP
    ...         break
    >>> stopper.reason                                 # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        patience: int = 5,
        min_delta: float = 0.0,
        burn_in: int = 0,
        restore_best: bool = False,
        p: float = 2.0,
        normalization: str = "global",
        **source_options: Any,
    ) -> None:
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"`patience` must be an integer >= 1, got {patience!r}")
        if not min_delta >= 0 or math.isinf(min_delta):
            raise ValueError(f"`min_delta` must be a finite number >= 0, got {min_delta!r}")
        if not isinstance(burn_in, int) or burn_in < 0:
            raise ValueError(f"`burn_in` must be an integer >= 0, got {burn_in!r}")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.burn_in = burn_in
        self.restore_best = restore_best
        self.compute_options: dict[str, Any] = {"p": p, "normalization": normalization, **source_options}
        self.reset()

    def reset(self) -> None:
        """Forget every check."""
        self.history: list[Check] = []
        self.best = -math.inf
        self.best_index: int | None = None
        self.counter = 0
        self.stopped_at: int | None = None
        self.last_result: Any = None
        self._best_state: Any = None

    @property
    def should_stop(self) -> bool:
        return self.stopped_at is not None

    @property
    def reason(self) -> str:
        """Why training stopped, or why not yet."""
        if self.stopped_at is None:
            return f"not stopped after {len(self.history)} checks (counter {self.counter}/{self.patience})"
        return (
            f"mean normalized NP did not rise by more than {self.min_delta} for {self.patience} checks: stopped at "
            f"check {self.stopped_at}; best {self.best:.6f} at check {self.best_index}"
        )

    def measure(self, source: Any) -> float:
        """Mean normalized NP of ``source``: a number is taken as is; a model or list of matrices is computed."""
        if isinstance(source, (int, float)):
            return float(source)
        self.last_result = compute(source, **self.compute_options)
        return self.last_result.mean_normalized_np

    def step(self, source: Any) -> bool:
        """Record one check of ``source`` (model, list/dict of matrices, or precomputed value); True to stop."""
        value = self.measure(source)
        if not math.isfinite(value):
            raise ValueError(f"mean normalized NP must be finite, got {value}")
        index = len(self.history)
        if self.stopped_at is not None:  # already stopped: record, but the decision and the best stay as they were
            self.history.append(Check(index, value, self.best, self.counter, False))
            return True
        if index < self.burn_in:
            self.history.append(Check(index, value, self.best, self.counter, True))
            return False
        improved, self.counter, stop = stopping_decision(
            value, self.best, self.counter, patience=self.patience, min_delta=self.min_delta
        )
        if improved:
            self.best, self.best_index = value, index
            if self.restore_best and hasattr(source, "state_dict"):
                self._best_state = copy.deepcopy(source.state_dict())
        self.history.append(Check(index, value, self.best, self.counter, False))
        if stop:
            self.stopped_at = index
        return self.should_stop

    def restore_best_weights(self, model: Any) -> None:
        """Load the weights saved at the best check into ``model`` (needs ``restore_best=True``)."""
        if self._best_state is None:
            raise RuntimeError("no best weights kept: create EarlyStopping(restore_best=True) and step with a model")
        model.load_state_dict(self._best_state)

    def history_frame(self) -> Any:
        """The history as a pandas DataFrame: index, value, best, counter, burn_in."""
        import pandas as pd

        return pd.DataFrame([asdict(c) for c in self.history])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (for checkpointing callbacks), the best weights included when
        ``restore_best`` keeps them, so that :meth:`restore_best_weights` works after a resumed run."""
        return {
            "history": [asdict(c) for c in self.history],
            "best": self.best,
            "best_index": self.best_index,
            "counter": self.counter,
            "stopped_at": self.stopped_at,
            "best_state": self._best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [Check(**c) for c in state["history"]]
        self.best = state["best"]
        self.best_index = state["best_index"]
        self.counter = state["counter"]
        self.stopped_at = state["stopped_at"]
        self._best_state = state.get("best_state")


def first_stop(values: Any, **options: Any) -> int | None:
    """Index of the check at which :class:`EarlyStopping` (with ``options``) stops on a recorded series, or None.

    For evaluating the rule offline on curves recorded during training, e.g. over a grid of patience values.
    """
    rule = EarlyStopping(**options)
    for value in values:
        if rule.step(float(value)):
            return rule.stopped_at
    return None
