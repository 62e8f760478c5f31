"""Early stopping on neural persistence; framework adapters live in ``.lightning`` and ``.huggingface``."""

from .early_stopping import Check, EarlyStopping, first_stop, stopping_decision

__all__ = ["Check", "EarlyStopping", "first_stop", "stopping_decision"]
