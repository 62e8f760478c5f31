"""Analysing a Llama-shaped bfloat16 checkpoint, against the time to read it once.

Writes a synthetic checkpoint (``--size 1b``, default: 16 blocks of hidden 2048, 32 heads with 8 key/value heads,
MLP 8192; ``--size 7b``: 32 blocks of q, k, v, o 4096x4096 and gate, up, down 4096x11008) with ``config.json``
into a temporary folder, then prints:

* the time to read every tensor once (``safetensors.safe_open`` with torch, touching every byte),
* the time of ``analyze`` on it (numba's cache warmed first),
* their ratio, and the peak RSS of the analysing process;
* with ``--null K`` and/or ``--baselines``: the time of ``analyze`` with them as well, and its ratio to the plain
  ``analyze`` of the same round (the null model's and the statistics' cost);
* with ``--dcp``: the same tensors saved with ``torch.distributed.checkpoint``, the time of one ``dcp.load`` of
  them all against ``analyze`` of that folder (which reads it tensor by tensor).

Each is the best of five rounds, read and analysis taking turns, each in a fresh process. Both read from the
page cache (the file was just written), so the comparison is compute against compute.
``--cold`` empties the page cache before each run instead (Linux, as root), so both read from the disk, as a first
look at a checkpoint does.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "tiny": dict(hidden=512, layers=2, heads=8, kv=2, mlp=1376),
    "1b": dict(hidden=2048, layers=16, heads=32, kv=8, mlp=8192),
    "7b": dict(hidden=4096, layers=32, heads=32, kv=32, mlp=11008),
}
ROUNDS = 5


def shapes(size: dict) -> list[tuple[str, tuple[int, int]]]:
    h, hd = size["hidden"], size["hidden"] // size["heads"]
    out = []
    for b in range(size["layers"]):
        p = f"model.layers.{b}."
        out += [
            (p + "self_attn.q_proj.weight", (size["heads"] * hd, h)),
            (p + "self_attn.k_proj.weight", (size["kv"] * hd, h)),
            (p + "self_attn.v_proj.weight", (size["kv"] * hd, h)),
            (p + "self_attn.o_proj.weight", (h, size["heads"] * hd)),
            (p + "mlp.gate_proj.weight", (size["mlp"], h)),
            (p + "mlp.up_proj.weight", (size["mlp"], h)),
            (p + "mlp.down_proj.weight", (h, size["mlp"])),
        ]
    return out


def write_checkpoint(folder: Path, size: dict) -> Path:
    """A bf16 safetensors file written tensor by tensor (never the whole model in memory), and its config."""
    rng = np.random.default_rng(0)
    tensors = shapes(size)
    header, offset = {}, 0
    for name, shape in tensors:
        nbytes = shape[0] * shape[1] * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    base: dict[tuple[int, int], np.ndarray] = {}  # one random matrix per shape, varied per tensor
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for i, (_, shape) in enumerate(tensors):
            if shape not in base:
                x = rng.standard_normal(shape, dtype=np.float32) * 0.02
                base[shape] = (x.view(np.uint32) >> 16).astype(np.uint16)
            (base[shape] ^ np.uint16(i & 0x7)).tofile(f)  # vary the lowest mantissa bits per tensor
    config = {"model_type": "llama", "hidden_size": size["hidden"], "num_attention_heads": size["heads"],
              "num_key_value_heads": size["kv"], "intermediate_size": size["mlp"], "num_hidden_layers": size["layers"]}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


READ = """
import sys, time, torch
from safetensors import safe_open
t0 = time.perf_counter()
with safe_open(sys.argv[1], framework="pt") as f:
    for name in f.keys():
        tensor = f.get_tensor(name)
        tensor.view(torch.int16).max()  # touch every byte
        del tensor
print(time.perf_counter() - t0)
"""


ANALYZE = """
import sys, time, resource
import numpy as np
import neural_persistence as npers
from neural_persistence.analysis.analyze import analyze
from neural_persistence.core.stacked import tree_values_stack
from neural_persistence.core.weights import to_key_stack
t0 = time.perf_counter()
for shape in ((64, 64), (1100, 1000)):  # load numba's cached kernels (serial and parallel), once a process
    npers.layer_tree(npers.bfloat16_bits(np.ones(shape, np.uint16)))
tree_values_stack(to_key_stack(npers.bfloat16_bits(np.ones((2, 64, 64), np.uint16))), ["a", "b"])  # the heads' kernel
load = time.perf_counter() - t0
t0 = time.perf_counter()
s = analyze([sys.argv[1]], sys.argv[2], per_head=sys.argv[3] == "1", null=int(sys.argv[4]),
            baselines=sys.argv[5] == "1")
seconds = time.perf_counter() - t0
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, s.measured, len(s.errors), load)
"""


TO_DCP = """
import sys, torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
dcp.save(load_file(sys.argv[1]), checkpoint_id=sys.argv[2])
"""

READ_DCP = """
import sys, time, torch
import torch.distributed.checkpoint as dcp
reader = dcp.FileSystemReader(sys.argv[1])
meta = reader.read_metadata().state_dict_metadata
state = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.items() if hasattr(m, "size")}
t0 = time.perf_counter()
dcp.load(state, storage_reader=reader)  # every tensor read once, in one call
print(time.perf_counter() - t0)
"""


def dcp_lines(tmp: Path, ckpt: Path, per_head: bool) -> None:
    """The same checkpoint as a Distributed Checkpoint folder: reading it once against analyze reading it."""
    folder = tmp / "dcp"
    subprocess.run([sys.executable, "-c", TO_DCP, str(ckpt / "model.safetensors"), str(folder)], check=True,
                   capture_output=True)
    (folder / "config.json").write_bytes((ckpt / "config.json").read_bytes())
    os.sync()
    reads, analyses = [], []
    for i in range(ROUNDS):
        reads.append(float(subprocess.run([sys.executable, "-c", READ_DCP, str(folder)], check=True,
                                          capture_output=True, text=True).stdout.split()[-1]))
        out = subprocess.run([sys.executable, "-c", ANALYZE, str(folder), str(tmp / f"dcp-out{i}"),
                              "1" if per_head else "0", "0", "0"], check=True, capture_output=True, text=True)
        seconds, _, measured, errors, _ = out.stdout.split()
        if int(errors):
            sys.exit(f"analyze of the DCP checkpoint reported {errors} errors")
        analyses.append(float(seconds))
    read, analyze_s = min(reads), min(analyses)
    print(f"DCP checkpoint (torch.distributed.checkpoint.save of the same tensors): read every tensor once "
          f"(dcp.load): {read:.2f} s; analyze{' --per-head' if per_head else ''} ({measured} tensors, tensor by "
          f"tensor): {analyze_s:.2f} s; ratio analyze / read: {analyze_s / read:.2f}")


def drop_page_cache() -> None:
    """Write back and drop the page cache, so that the next run reads from the disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1")
    except OSError as err:
        raise SystemExit(f"--cold needs Linux and root, to empty the page cache: {err}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--per-head", action="store_true")
    parser.add_argument("--cold", action="store_true", help="empty the page cache before each run (root)")
    parser.add_argument("--null", type=int, default=0, metavar="K", help="also time analyze --null K")
    parser.add_argument("--baselines", action="store_true", help="also time analyze --baselines")
    parser.add_argument("--dcp", action="store_true",
                        help="also the same checkpoint saved as a Distributed Checkpoint: dcp.load of it against analyze")
    args = parser.parse_args()
    extras = args.null > 0 or args.baselines
    size = SIZES[args.size]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        ckpt = write_checkpoint(Path(tmp) / "ckpt", size)
        os.sync()  # no writing back of the new file to the disk while the measurements run
        gb = (ckpt / "model.safetensors").stat().st_size / 1e9
        print(f"{args.size}: wrote {gb:.2f} GB of bf16 in {time.perf_counter() - t0:.1f} s")
        warm = write_checkpoint(Path(tmp) / "warm", SIZES["tiny"])  # compile numba's kernels once
        subprocess.run([sys.executable, "-c", ANALYZE, str(warm), str(Path(tmp) / "warm-out"), "0", str(args.null),
                        "1" if args.baselines else "0"], check=True, capture_output=True)
        # Each measurement in its own process (a child's peak RSS would otherwise start at the parent's), the read
        # and the analysis taking turns, so that both see the machine in the same state (on a virtual machine the
        # time to map the same cached file moves by tens of percent from one minute to the next).
        reads, analyses, with_extras = [], [], []
        for _ in range(1 if args.cold else ROUNDS):
            if args.cold:
                drop_page_cache()
            reads.append(float(subprocess.run([sys.executable, "-c", READ, str(ckpt / "model.safetensors")],
                                              check=True, capture_output=True, text=True).stdout))
            if args.cold:
                drop_page_cache()
            out = subprocess.run([sys.executable, "-c", ANALYZE, str(ckpt), str(Path(tmp) / f"out{len(reads)}"),
                                  "1" if args.per_head else "0", "0", "0"], check=True, capture_output=True, text=True)
            seconds, rss_kb, measured, errors, load = out.stdout.split()
            if int(errors):
                sys.exit(f"analyze reported {errors} errors: the timing would measure a failure")
            analyses.append(float(seconds))
            if extras:
                more = subprocess.run([sys.executable, "-c", ANALYZE, str(ckpt), str(Path(tmp) / f"extra{len(reads)}"),
                                       "1" if args.per_head else "0", str(args.null), "1" if args.baselines else "0"],
                                      check=True, capture_output=True, text=True)
                if int(more.stdout.split()[3]):
                    sys.exit(f"analyze {args.null=} {args.baselines=} reported {more.stdout.split()[3]} errors")
                with_extras.append(float(more.stdout.split()[0]))
        read, analyze_s = min(reads), min(analyses)
        if len(reads) > 1:
            print("rounds (read, analyze):", ", ".join(f"({r:.2f}, {a:.2f})" for r, a in zip(reads, analyses)))
        print(f"loading numba's compiled kernels (once a process, not counted below): {float(load):.2f} s")
        where = "from the disk" if args.cold else "from the page cache"
        print(f"read every tensor once (safe_open, touch every byte), {where}: {read:.2f} s")
        print(f"analyze{' --per-head' if args.per_head else ''} ({measured} tensors, {errors} errors): "
              f"{analyze_s:.2f} s")
        print(f"ratio analyze / read: {analyze_s / read:.2f}")
        print(f"peak RSS of the analysing process: {int(rss_kb) / 1024:.0f} MB")
        if extras:
            what = " ".join(([f"--null {args.null}"] if args.null else []) + (["--baselines"] if args.baselines else []))
            ratios = [e / a for e, a in zip(with_extras, analyses)]
            print(f"analyze {what}: {min(with_extras):.2f} s; ratio to analyze, per round: "
                  + ", ".join(f"{r:.2f}" for r in ratios) + f" (median {float(np.median(ratios)):.2f})")
        if args.dcp:
            dcp_lines(Path(tmp), ckpt, args.per_head)


if __name__ == "__main__":
    main()
