"""A first look: train a small MLP on scikit-learn's digits and watch its neural persistence.

Everything runs offline on the CPU in seconds: the data ship with scikit-learn. Prints the per-layer table after
each epoch's NP check, where the NP stopping rule would stop, and saves a persistence diagram.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .._optional import require


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fast", action="store_true", help="fewer epochs (for the test suite)")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the outputs")
    args = parser.parse_args(argv)

    torch = require("torch", "torch")
    datasets = require("sklearn.datasets", "dev")
    rich_console = require("rich.console", "torch").Console()
    rich_table = require("rich.table", "torch")
    import neural_persistence as npers
    from neural_persistence.analysis.plots import plot_diagram

    x, y = datasets.load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    split = int(0.8 * len(x))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 650), torch.nn.ReLU(), torch.nn.Linear(650, 650), torch.nn.ReLU(), torch.nn.Linear(650, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-4)
    stopper = npers.EarlyStopping(patience=3, min_delta=1e-3, bias=True)  # the paper's convention for MLPs
    epochs = 3 if args.fast else 15
    rich_console.print(f"[bold]Training a 64-650-650-10 MLP on scikit-learn's digits for {epochs} epochs[/bold]")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(split)
        for i in range(0, split, 32):
            batch = order[i : i + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        stopper.step(model)
        with torch.no_grad():
            accuracy = (model(x[split:]).argmax(1) == y[split:]).float().mean().item()
        rich_console.print(
            f"epoch {epoch + 1:2d}: mean normalized NP {stopper.history[-1].value:.4f}   held-out accuracy {accuracy:.3f}"
            + ("   <- the NP rule stops here" if stopper.stopped_at == epoch else "")
        )
    result = stopper.last_result
    table = rich_table.Table(title="neural persistence per layer (bias as an extra input, global normalization)")
    for column in ("layer", "shape", "NP", "normalized NP"):
        table.add_column(column, justify="right")
    for layer in result.layers:
        table.add_row(layer.name, f"{layer.shape[0]}x{layer.shape[1]}", f"{layer.np:.4f}", f"{layer.normalized_np:.4f}")
    rich_console.print(table)
    rich_console.print(f"mean normalized NP: [bold]{result.mean_normalized_np:.4f}[/bold]; {stopper.reason}")
    args.out.mkdir(parents=True, exist_ok=True)
    csv = args.out / "layers.csv"
    result.to_frame().to_csv(csv, index=False)
    png = args.out / "diagram_layer_2.png"
    plot_diagram(result["2"].diagram, title="layer 2 (650x650) after training", path=png)
    rich_console.print(f"wrote {csv} and {png}")


if __name__ == "__main__":
    main()
