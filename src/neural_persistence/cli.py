"""The ``neural-persistence`` command: the same functions as the Python API, with tables and progress bars."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

_DESCRIPTION = """\
Neural persistence (Rieck et al., ICLR 2019) of network weights: each weight matrix is a bipartite graph
weighted by |w| / max|w|; the 0-dimensional persistence of that graph (its maximum spanning tree) is summarised
by a p-norm, normalized to [0, ~1]. Higher means stronger, more structured connectivity.

Typical session on a training run (a folder of checkpoint-*/ directories with config.json and safetensors):

  neural-persistence describe runs/my-run                   # what would be measured: roles, heads, shapes
  neural-persistence analyze runs/my-run --out np/my-run --per-head
  neural-persistence report np/my-run                       # plots + np/my-run/report.html
  neural-persistence compare np/run-a np/run-b --out np/cmp # several runs on one axis

Is it structure or the weight distribution? --null 8 --baselines on analyze sets each matrix beside its own
shuffles (structural_np) and simple statistics; neural-persistence dgp measures paths through each block.

Results go to an SQLite database in --out as each tensor finishes: kill a run any time, start it again, and
only what is missing is computed."""


def _console() -> Any:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


_NONE_IS_MINUS_ONE = ("block", "head", "expert")  # columns where -1 means "there is none"


def _cell(column: str, value: Any, digits: int) -> str:
    """A table cell: blank where there is no value (NaN, a missing step, -1 for no block, head or expert)."""
    import pandas as pd

    if value is None or value is pd.NA or isinstance(value, float) and value != value:
        return ""
    if column in _NONE_IS_MINUS_ONE and isinstance(value, (int, float)) and value == -1:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if column == "step" and value.is_integer() else f"{value:.{digits}f}"
    return str(value)


def _table(title: str, frame: Any, digits: int = 4) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column), justify="right", overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[_cell(str(c), v, digits) for c, v in zip(frame.columns, row)])
    return table


def _describe(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis.analyze import plan_units
    from .sources.plan import PlanOptions

    from .sources.hub_cache import HubOptions

    planned = plan_units(args.paths, PlanOptions(args.per_head, args.include_embeddings),
                         hub=HubOptions(args.revisions, args.cache_dir))
    rows = pd.DataFrame(
        [{"run": u.run, "checkpoint": u.checkpoint.name, "step": u.checkpoint.step, "tensor": s.tensor,
          "block": s.block, "role": s.role, "head": s.head, "expert": s.expert, "rows": s.rows, "cols": s.cols,
          "dtype": u.tensor.dtype, "format": u.checkpoint.format} for u in planned.units for s in u.specs])
    console = _console()
    for problem in planned.problems:
        console.print(f"[yellow]note[/yellow] {problem.run}/{problem.checkpoint.name} {problem.tensor}: "
                      f"{problem.message}")
    if rows.empty:
        console.print("nothing to measure")
        return 1
    first = rows[rows["checkpoint"] == rows["checkpoint"].iloc[0]]
    summary = (
        first.groupby(["tensor", "block", "role", "expert", "rows", "cols", "dtype"], sort=False)["head"]
        .agg(lambda h: len(h) if (h >= 0).any() else "-").reset_index().rename(columns={"head": "heads"})
    )
    if (summary["expert"] < 0).all():
        summary = summary.drop(columns="expert")
    console.print(_table(f"matrices of {rows['checkpoint'].iloc[0]} (one checkpoint shown)", summary))
    counts = (rows.groupby(["run", "checkpoint", "step", "format"], dropna=False).size().reset_index(name="matrices")
              .sort_values(["run", "step", "checkpoint"], na_position="last"))  # steps in numeric order
    console.print(_table("checkpoints", counts))
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from .analysis.analyze import analyze
    from .analysis.table import export, load_table

    console = _console()
    summary = analyze(args.paths, args.out, per_head=args.per_head, include_embeddings=args.include_embeddings,
                      workers=args.workers, scheduler=args.scheduler, scheduler_timeout=args.scheduler_timeout,
                      progress=True, null=args.null, null_seed=args.null_seed, baselines=args.baselines,
                      revisions=args.revisions, cache_dir=args.cache_dir)
    for note in summary.notes:
        console.print(f"[yellow]note[/yellow] {note}")
    options = {"per_head": args.per_head, "include_embeddings": args.include_embeddings}
    path = export(args.out, args.format, normalization=args.normalization, **options)
    frame = load_table(args.out, normalization=args.normalization, **options)
    table = frame.pivot_table(index=["run", "step", "checkpoint"], columns="role", values="normalized_np",
                              aggfunc="mean").reset_index().sort_values(["run", "step"])
    console.print(_table(f"mean normalized NP per role ({args.normalization} normalization)", table))
    console.print(f"measured {summary.measured} tensors, {summary.skipped_done} already done; "
                  f"table: {path} ({len(frame)} matrices)")
    for ckpt, tensor, message in summary.errors:
        console.print(f"[red]error[/red] {ckpt} {tensor}: {message}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .analysis.report import report

    from .analysis.changepoints import TrendChangeDetector
    from .analysis.trajectory import changes_shown

    result = report(args.dir, normalization=args.normalization, detector=TrendChangeDetector(alpha=args.alpha),
                    metrics=args.metrics if args.metrics is not None else True, interactive=not args.static)
    console = _console()
    console.print(_table("change points per role", changes_shown(result.tables["role_changes"])))
    if result.completeness is not None:
        incomplete = result.completeness.missing or result.completeness.failed
        console.print(("[yellow]" if incomplete else "") + result.completeness.sentence())
    console.print(f"wrote {result.html} and {len(result.figures)} figures")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .analysis.report import compare

    result = compare(args.dirs, args.out, normalization=args.normalization, interactive=not args.static)
    console = _console()
    console.print(_table("mean normalized NP per role, first and last checkpoint", result.tables["summary"]))
    for note in result.tables["completeness"]:
        console.print(note)
    console.print(f"wrote {result.html}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    import numpy as np

    import neural_persistence as npers

    with np.load(args.path) as data:
        result = npers.compute({k: data[k] for k in data.files}, p=args.p, normalization=args.normalization)
    print(result.to_frame().to_string(index=False))
    print(f"mean normalized NP: {result.mean_normalized_np:.6f}")
    return 0


def _dgp(args: argparse.Namespace) -> int:
    import numpy as np

    console = _console()
    dtype = np.float64 if args.float64 else np.float32
    if len(args.paths) == 1 and str(args.paths[0]).endswith(".npz"):
        import neural_persistence as npers

        with np.load(args.paths[0]) as data:
            layers = [data[k] for k in data.files]
        result = npers.deep_graph_persistence(layers, p=args.p, dtype=dtype)
        rows, cols = result.matrix.shape
        print(f"deep graph persistence of {len(layers)} layers ({rows} inputs -> {cols} outputs): "
              f"NP {result.np:.6f}, normalized NP {result.normalized_np:.6f}")
        return 0
    if args.out is None:
        raise ValueError("--out is needed for checkpoints (the table dgp.csv goes there); an .npz chain needs none")
    import pandas as pd

    from .analysis.paths import run_paths

    table = run_paths(args.paths, args.out, p=args.p, dtype=dtype, paths=args.paths_measured,
                      progress=lambda message: console.print(message))
    frame = pd.read_csv(table)
    if frame.empty:
        console.print("no transformer block with both maps of a path (mlp up/down, v/o, q/k) was found")
        return 1
    summary = frame.pivot_table(index=["run", "step", "checkpoint"], columns="path", values="normalized_np",
                                aggfunc="mean", dropna=False).reset_index().sort_values(["run", "step"])
    console.print(_table("mean normalized DGP per path (over blocks and heads)", summary))
    console.print(f"table: {table} ({len(frame)} paths)")
    return 0


def _path_list(text: str) -> list[str]:
    """An argparse type: a comma-separated subset of mlp, vo, qk."""
    from .analysis.paths import PATHS

    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in PATHS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(PATHS)} (comma-separated)")
    return chosen


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import main as demo

    demo(["--fast"] if args.fast else [])
    return 0


def static_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--static", action="store_true",
                   help="images only: no interactive (plotly) figures, and a page of a few kB instead of ~5 MB")


def _non_negative(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative")
    return value


def _probability(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1")
    return value


PATHS_HELP = ("model folders, .safetensors / .bin / .gguf files, Distributed Checkpoint or DeepSpeed global_step "
              "folders, folders of checkpoints, or ORG/NAME of the local hub cache (with --revisions)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neural-persistence", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")

    def command(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    def paths_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--revisions", default=None, metavar="GLOB",
                       help="for ORG/NAME of the local Hugging Face hub cache: which revisions, e.g. 'step*' "
                            "(default main); nothing is downloaded")
        p.add_argument("--cache-dir", default=None, type=Path, metavar="DIR",
                       help="the hub cache (default $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub)")
        p.add_argument("--per-head", action="store_true",
                       help="cut q, k, v (rows) and o (columns) into attention heads, using config.json")
        p.add_argument("--include-embeddings", action="store_true",
                       help="also measure embeddings and the LM head (skipped by default)")

    def normalization_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--normalization", choices=["global", "layer", "role"], default="global",
                       help="w_max over the whole checkpoint (global, the paper's), each matrix, or each role")

    p = command("describe", help="list what would be measured (roles, heads, shapes) without computing")
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    paths_options(p)
    p.set_defaults(run=_describe)

    p = command(
        "analyze", help="measure every linear map of every checkpoint; resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure every linear map (attention q, k, v, o; MLP up, gate, down; ...) of every checkpoint.",
        epilog="Writes OUT/results.sqlite (committed every half second: a killed run resumes where it stopped) and\n"
               "OUT/results.csv or .parquet: one row per matrix (per head with --per-head) with the columns\n"
               "run, checkpoint, step, tokens, tensor, block, role, head, rows, cols, np, normalized_np.\n\n"
               "Examples:\n"
               "  neural-persistence analyze runs/my-run --out np/my-run --per-head\n"
               "  neural-persistence analyze EleutherAI/pythia-160m --revisions 'step*' --out np/pythia --per-head\n"
               "  neural-persistence analyze model.Q4_K_M.gguf torchtitan/step-1000 output/global_step500 --out np/x\n"
               "  neural-persistence analyze ckpt-a ckpt-b --out np/ab --normalization role --format parquet\n"
               "  neural-persistence analyze /shared/run --out np/run --scheduler tcp://scheduler:8786")
    p.add_argument("paths", nargs="+", help=PATHS_HELP)
    p.add_argument("--out", required=True, type=Path, help="output folder (database, results table)")
    paths_options(p)
    normalization_option(p)
    p.add_argument("--format", choices=["csv", "parquet"], default="csv", help="results table format")
    p.add_argument("--null", type=_non_negative, default=0, metavar="K",
                   help="also measure K shuffles of every matrix (the null model: same weights, no arrangement); "
                        "adds null_np, null_np_std and structural_np = (np - null_np) / null_np_std (default 0: off)")
    p.add_argument("--null-seed", type=int, default=0, metavar="S", help="seed of the shuffles (default 0)")
    p.add_argument("--baselines", action="store_true",
                   help="also store each matrix's rms, max|w|/rms, excess kurtosis, Var(|w|/max|w|) and Frobenius norm")
    p.add_argument("--workers", type=int, default=None, help="threads of the local pool (default: all cores)")
    p.add_argument("--scheduler", default=None,
                   help="Dask scheduler address, e.g. tcp://host:8786 (workers must see the same paths)")
    p.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to try to reach --scheduler before giving up (default 10)")
    p.set_defaults(run=_analyze)

    p = command(
        "report", help="plots and report.html for a finished analysis",
        description="Writes DIR/plots/*.png|svg (NP per role over steps with change points, block x step heatmap,\n"
                    "per-head heatmaps, a persistence diagram) and DIR/report.html with the key tables.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path, help="an analyze --out folder")
    normalization_option(p)
    p.add_argument("--alpha", type=_probability, default=0.02,
                   help="chance that a series without a change gets a change point (default 0.02; smaller: "
                        "fewer, surer change points)")
    p.add_argument("--metrics", type=Path, default=None, metavar="FILE.csv",
                   help="per-step metrics to plot above NP (a 'step' column and any others); default: the loss and "
                        "eval curves of trainer_state.json")
    static_option(p)
    p.set_defaults(run=_report)

    p = command(
        "compare", help="several analyses on common axes (step, tokens)",
        description="Runs, recipes or model sizes on one plot: mean normalized NP against step, and against\n"
                    "training tokens where trainer_state.json recorded them (num_input_tokens_seen).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", type=Path, help="analyze --out folders")
    p.add_argument("--out", required=True, type=Path, help="folder for compare.html and plots")
    static_option(p)
    normalization_option(p)
    p.set_defaults(run=_compare)

    p = command("layers", help="NP of every 2-D array in an .npz file, one row per layer")
    p.add_argument("path", help=".npz file whose arrays are the layers, in order")
    p.add_argument("-p", type=float, default=2.0, help="order of the norm (default 2)")
    p.add_argument("--normalization", choices=["global", "layer"], default="global")
    p.set_defaults(run=_layers)

    p = command(
        "dgp", help="deep graph persistence of every block's paths (MLP, per-head v->o and q->k), or of an MLP chain",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Deep graph persistence (Girrbach et al., TMLR 2023): a chain of layers, each z-scored and\n"
                    "scaled by the chain's largest |w|, folded by the max-min product (the strength of the strongest\n"
                    "path between an input and an output) into one matrix whose NP is measured. In a transformer\n"
                    "block, three chains: mlp (up [and gate] -> down), vo (per head, v -> o) and qk (per head,\n"
                    "q -> k^T), each hidden x hidden. They ignore the residual stream, norms and the softmax.",
        epilog="Writes OUT/dgp.csv (run, checkpoint, step, block, path, head, rows, cols, np, normalized_np), block\n"
               "by block: an interrupted run resumes. A 1B-shaped checkpoint (16 blocks) takes about a minute on 2 cores.\n\n"
               "Examples:\n"
               "  neural-persistence dgp runs/my-run --out np/my-run-dgp\n"
               "  neural-persistence dgp model/ --out np/dgp --paths mlp\n"
               "  neural-persistence dgp mlp.npz                   # arrays in order, each (outputs x inputs)")
    p.add_argument("paths", nargs="+", help="model folders, .safetensors files, folders of checkpoints, or one .npz")
    p.add_argument("--out", type=Path, default=None, help="output folder for dgp.csv (not needed for an .npz)")
    p.add_argument("-p", type=float, default=2.0, help="order of the norm (default 2)")
    p.add_argument("--paths", dest="paths_measured", type=_path_list, default=["mlp", "vo", "qk"], metavar="LIST",
                   help="which paths: a comma-separated subset of mlp, vo, qk (default all)")
    p.add_argument("--float64", action="store_true",
                   help="fold in float64 (default float32: twice as fast, rounds only the scaled weights)")
    p.set_defaults(run=_dgp)

    p = command("demo", help="the make-demo job")
    p.add_argument("--fast", action="store_true")
    p.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print(f"neural-persistence {args.command}: interrupted; everything measured so far is kept, and the same "
              "command resumes", file=sys.stderr)
        return 130
    except Exception as err:  # one line, never a traceback, unless --debug
        if args.debug:
            raise
        print(f"neural-persistence {args.command}: error: {_error_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, (FileNotFoundError, ValueError)) else 1


def _error_line(err: BaseException) -> str:
    """What failed and what to do, in one line."""
    import errno
    import sqlite3

    text = str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "database or disk is full" in text:
        where = f" ({err.filename})" if isinstance(err, OSError) and err.filename else ""
        return (f"no space left on the device{where}; what was measured is kept in the database: free some space and "
                "run the same command again to resume")
    if isinstance(err, sqlite3.OperationalError) and "locked" in text:
        return ("the results database is locked by another process writing to the same --out; wait for it to "
                "finish, or give another --out")
    if isinstance(err, (FileNotFoundError, ValueError)):
        return text
    return f"{type(err).__name__}: {text} (run with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
