"""Tables, trajectories and plots of neural persistence results."""

__all__: list[str] = []
