"""Neural-persistence early stopping as a Hugging Face ``TrainerCallback`` (needs ``neural-persistence[hf]``)."""

from __future__ import annotations

from typing import Any

from .._optional import require
from .early_stopping import EarlyStopping

transformers = require("transformers", "hf")

__all__ = ["NeuralPersistenceEarlyStoppingCallback"]


class NeuralPersistenceEarlyStoppingCallback(transformers.TrainerCallback, transformers.trainer_callback.ExportableState):  # type: ignore[misc,name-defined]
    """Stop ``Trainer.train`` when mean normalized NP stops rising (Rieck et al. 2019, Algorithm 2).

    Named like ``transformers.EarlyStoppingCallback``: ``early_stopping_patience`` (the paper's g) and
    ``early_stopping_threshold`` (delta). Checks on every epoch end (``check_on="epoch"``) or after every
    evaluation (``check_on="evaluate"``), needs no validation data, appends ``np/mean_normalized`` to the
    trainer's log history and sets ``control.should_training_stop``. Its rule (history, best, counter) is saved in
    each checkpoint's ``trainer_state.json`` (``stateful_callbacks``), so ``train(resume_from_checkpoint=...)`` with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)`` goes on counting where it stopped; the
    Trainer then replaces the callback object with a restored one (find it in ``trainer.callback_handler.callbacks``). Best weights are not kept there (the file is JSON): use the
    checkpoint of the best step (``rule.best_index``) or ``load_best_model_at_end``.

    Examples
    --------
    >>> trainer = Trainer(model, args, train_dataset=ds,
    ...                   callbacks=[NeuralPersistenceEarlyStoppingCallback(early_stopping_patience=3)])  # doctest: +SKIP
    """

    def __init__(
        self,
        early_stopping_patience: int = 3,
        early_stopping_threshold: float = 0.0,
        *,
        burn_in: int = 0,
        check_on: str = "epoch",
        **compute_options: Any,
    ) -> None:
        if check_on not in ("epoch", "evaluate"):
            raise ValueError(f"`check_on` can be 'epoch' or 'evaluate', got {check_on!r}")
        self.rule = EarlyStopping(
            patience=early_stopping_patience, min_delta=early_stopping_threshold, burn_in=burn_in, **compute_options
        )
        self.check_on = check_on
        self._args = {"early_stopping_patience": early_stopping_patience,
                      "early_stopping_threshold": early_stopping_threshold, "burn_in": burn_in, "check_on": check_on,
                      **compute_options}

    def state(self) -> dict[str, Any]:
        """What the Trainer writes into a checkpoint's ``trainer_state.json`` to restore this callback."""
        rule = {k: v for k, v in self.rule.state_dict().items() if k != "best_state"}
        return {"args": dict(self._args), "attributes": {"rule_state": rule}}

    @property
    def rule_state(self) -> dict[str, Any]:
        return self.rule.state_dict()

    @rule_state.setter
    def rule_state(self, state: dict[str, Any]) -> None:
        self.rule.load_state_dict(state)

    def _check(self, state: Any, control: Any, model: Any) -> None:
        if model is None:
            raise ValueError("the Trainer passed no model to the callback; cannot compute neural persistence")
        stop = self.rule.step(model)
        state.log_history.append(
            {"np/mean_normalized": self.rule.last_result.mean_normalized_np, "epoch": state.epoch, "step": state.global_step}
        )
        if stop:
            control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if self.check_on == "epoch":
            self._check(state, control, model)
        return control

    def on_evaluate(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if self.check_on == "evaluate":
            self._check(state, control, model)
        return control
