"""Deep graph persistence of transformer blocks at 1B shapes, against NP of the same blocks.

Writes a Llama-shaped bfloat16 checkpoint of ``--blocks`` blocks (hidden 2048, 32 query heads on 8 key/value
heads, MLP 8192, as ``benchmarks/checkpoint.py --size 1b``), then times, each in its own process (numba's cache
warmed first):

* ``analyze --per-head`` of it (NP of every matrix and head): the baseline,
* ``neural-persistence dgp`` of it, per path (mlp; vo and qk for the 32 heads), in float32 (the default) and,
  with ``--float64``, in float64,

and prints seconds per block, the ratio to the baseline, the min-max steps per second (end to end: reading and
scaling included), and the memory the
reference recipe's broadcast (an a x b x c cube per product) would need.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint import SIZES, write_checkpoint  # noqa: E402

RUN = """
import sys, time
import numpy as np
from neural_persistence.analysis.analyze import analyze
from neural_persistence.analysis.paths import run_paths
from neural_persistence.core.dgp import bottleneck_product
import neural_persistence as npers
from neural_persistence.core.stacked import tree_values_stack
from neural_persistence.core.weights import to_key_stack
bottleneck_product(np.ones((4, 4)), np.ones((4, 4)), np.float32); bottleneck_product(np.ones((4, 4)), np.ones((4, 4)))
for shape in ((64, 64), (1100, 1000)):  # load numba's cached kernels once a process, as benchmarks/checkpoint.py
    npers.layer_tree(npers.bfloat16_bits(np.ones(shape, np.uint16)))
tree_values_stack(to_key_stack(npers.bfloat16_bits(np.ones((2, 64, 64), np.uint16))), ["a", "b"])
what, path, out = sys.argv[1], sys.argv[2], sys.argv[3]
t0 = time.perf_counter()
if what == "analyze":
    analyze([path], out, per_head=True)
else:
    dtype = np.float64 if sys.argv[5] == "64" else np.float32
    run_paths([path], out, dtype=dtype, paths=[what], progress=lambda m: None)
print(time.perf_counter() - t0)
"""


def timed(*args: str) -> float:
    done = subprocess.run([sys.executable, "-c", RUN, *args], check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=1, help="blocks in the checkpoint (default 1)")
    parser.add_argument("--float64", action="store_true", help="also time the float64 fold")
    args = parser.parse_args()
    size = dict(SIZES["1b"], layers=args.blocks)
    h, mlp, heads, kv = size["hidden"], size["mlp"], size["heads"], size["kv"]
    hd = h // heads
    steps = {"mlp": h * mlp * h, "vo": heads * h * hd * h, "qk": heads * h * hd * h}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = write_checkpoint(Path(tmp) / "ckpt", size)
        baseline = timed("analyze", str(ckpt), str(Path(tmp) / "np"))
        print(f"1B shapes, {args.blocks} block(s): hidden {h}, {heads} heads on {kv} key/value heads, MLP {mlp}")
        print(f"analyze --per-head (NP of every matrix and head): {baseline / args.blocks:.2f} s per block")
        for dtype in ["32"] + (["64"] if args.float64 else []):
            total = 0.0
            for path in ("mlp", "vo", "qk"):
                seconds = timed(path, str(ckpt), str(Path(tmp) / f"dgp-{path}-{dtype}"), "", dtype) / args.blocks
                total += seconds
                cube = steps[path] * (4 if dtype == "32" else 8) / (heads if path != "mlp" else 1) / 2**30
                print(f"dgp {path:>3} float{dtype}: {seconds:6.2f} s per block, "
                      f"{steps[path] / seconds / 1e9:5.1f} G min-max steps/s end to end; the recipe's broadcast: "
                      f"a {cube:.0f} GiB cube per product")
            print(f"dgp, all paths, float{dtype}: {total:.1f} s per block, {total / (baseline / args.blocks):.0f}x "
                  "analyze --per-head")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"(benchmark took {time.perf_counter() - t0:.0f} s)")
