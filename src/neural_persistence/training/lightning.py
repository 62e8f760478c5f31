"""Neural-persistence early stopping as a Lightning callback (needs ``neural-persistence[lightning]``)."""

from __future__ import annotations

from typing import Any

from .._optional import require
from .early_stopping import EarlyStopping

pl = require("lightning.pytorch", "lightning")

__all__ = ["NeuralPersistenceEarlyStopping"]


class NeuralPersistenceEarlyStopping(pl.Callback):  # type: ignore[misc,name-defined]
    """Stop ``Trainer.fit`` when mean normalized NP stops rising (Rieck et al. 2019, Algorithm 2).

    Named like Lightning's ``EarlyStopping`` where they mean the same: ``patience``, ``min_delta``, ``verbose``.
    It checks at the end of every training epoch, or every ``every_n_steps`` optimizer steps when given (counted
    by ``trainer.global_step``, so with gradient accumulation a step is checked once, not once per batch; never
    during the sanity check); logs
    ``np/mean_normalized`` and ``np/normalized/<layer>`` through the trainer's logger; and sets
    ``trainer.should_stop``. ``burn_in`` checks are ignored at the start. Extra keyword arguments go to
    :func:`neural_persistence.compute` (``bias``, ``include``, ``exclude``, ...). Its state, the best weights
    included (``restore_best=True``), is saved in Lightning's checkpoints under :attr:`state_key`, so a run
    resumed with ``ckpt_path=`` goes on with the same counter and can still restore the best weights.

    Examples
    --------
    >>> trainer = Trainer(callbacks=[NeuralPersistenceEarlyStopping(patience=3, min_delta=1e-3)])  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        patience: int = 3,
        min_delta: float = 0.0,
        burn_in: int = 0,
        every_n_steps: int | None = None,
        restore_best: bool = False,
        log_layers: bool = True,
        verbose: bool = False,
        **compute_options: Any,
    ) -> None:
        super().__init__()
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise ValueError(f"`every_n_steps` must be None or an integer >= 1, got {every_n_steps!r}")
        self.rule = EarlyStopping(patience=patience, min_delta=min_delta, burn_in=burn_in, restore_best=restore_best,
                                  **compute_options)
        self.every_n_steps = every_n_steps
        self._last_checked_step: int | None = None
        self.log_layers = log_layers
        self.verbose = verbose

    @property
    def stopped_at(self) -> int | None:
        """Index of the check that stopped training."""
        return self.rule.stopped_at

    @property
    def state_key(self) -> str:
        """Where Lightning keeps this callback's state in a checkpoint (two such callbacks with other options
        keep theirs apart)."""
        return self._generate_state_key(patience=self.rule.patience, min_delta=self.rule.min_delta,
                                        every_n_steps=self.every_n_steps)

    def _check(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        self._last_checked_step = trainer.global_step
        stop = self.rule.step(pl_module)
        result = self.rule.last_result
        metrics = {"np/mean_normalized": result.mean_normalized_np}
        if self.log_layers:
            metrics.update({f"np/normalized/{layer.name}": layer.normalized_np for layer in result.layers})
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: _tensor(v) for k, v in metrics.items()})
        if stop:
            trainer.should_stop = True
            if self.verbose:
                print(f"[neural-persistence] {self.rule.reason}")

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.every_n_steps is None:
            self._check(trainer, pl_module)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step  # optimizer steps: the same over the batches of one accumulation
        if (self.every_n_steps is not None and step > 0 and step % self.every_n_steps == 0
                and step != self._last_checked_step):
            self._check(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {**self.rule.state_dict(), "last_checked_step": self._last_checked_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.load_state_dict(state_dict)
        self._last_checked_step = state_dict.get("last_checked_step")


def _tensor(value: float) -> Any:
    return require("torch", "torch").tensor(value)
