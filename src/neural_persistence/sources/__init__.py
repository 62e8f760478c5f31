"""Where weights come from: torch modules, convolutions, checkpoints."""

__all__: list[str] = []
