"""Demos: ``python -m neural_persistence.demo`` (the char-level GPT run behind ``make demo``) and
``python -m neural_persistence.demo.mlp_digits`` (a small MLP on scikit-learn's digits)."""

__all__: list[str] = []
