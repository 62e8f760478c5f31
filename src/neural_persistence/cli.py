"""The ``neural-persistence`` command."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="neural-persistence",
        description="Neural persistence (Rieck et al., ICLR 2019) of network weights.",
        epilog="Example: neural-persistence layers weights.npz  (an .npz of 2-D arrays, one per layer, in order)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    layers = sub.add_parser("layers", help="NP of every 2-D array in an .npz file, one row per layer")
    layers.add_argument("path", help=".npz file whose arrays are the layers, in order")
    layers.add_argument("-p", type=float, default=2.0, help="order of the norm (default 2)")
    layers.add_argument("--normalization", choices=["global", "layer"], default="global")
    sub.add_parser("demo", help="train a small MLP on scikit-learn's digits and show its NP")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import main as demo

        demo([])
        return 0
    import numpy as np

    import neural_persistence as npers

    with np.load(args.path) as data:
        result = npers.compute({k: data[k] for k in data.files}, p=args.p, normalization=args.normalization)
    print(result.to_frame().to_string(index=False))
    print(f"mean normalized NP: {result.mean_normalized_np:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
