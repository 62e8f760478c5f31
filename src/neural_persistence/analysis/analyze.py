"""Analyse checkpoints: every linear map of every checkpoint, one tensor at a time, into the results database.

Work units are (checkpoint, tensor). They run in a local pool of threads (the kernels release the GIL), or on
a Dask cluster when a scheduler address is given; either way only spanning-tree values travel back, and the
client alone writes the database. Units already in the database are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..core.baselines import weight_statistics
from ..core.compute import SPLIT_LAYER, layer_tree
from ..core.null import null_tree_keys, ranks_needed
from ..core.stacked import tree_values_stack
from ..core.threads import available_threads
from ..core.weights import to_key_stack, to_keys
from ..sources.checkpoints import TensorRef, prefetch_tensor, read_tensor
from ..sources.hub_cache import HubOptions
from ..sources.plan import PlanOptions
from ..sources.transformer_layout import MatrixSpec, cut, cut_stack
from .planning import PlannedRuns, Problem, Unit, plan_units
from .store import MatrixResult, Store, pack_bfloat16_keys, pack_tree

__all__ = ["AnalysisSummary", "Extras", "PlannedRuns", "Problem", "Unit", "analyze", "describe", "measure_unit", "plan_units"]


@dataclass
class AnalysisSummary:
    """What an ``analyze`` call did."""

    out: Path
    measured: int = 0
    skipped_done: int = 0
    errors: list[tuple[str, str, str]] = field(default_factory=list)  # (checkpoint, tensor, message)
    notes: list[str] = field(default_factory=list)  # a migrated database, ...


@dataclass(frozen=True)
class Extras:
    """What is measured beside each tree: ``null`` samples of the null model (0: none) drawn from ``seed``, and
    the weight ``statistics`` (:mod:`~neural_persistence.core.baselines`)."""

    null: int = 0
    seed: int = 0
    statistics: bool = False

    def wanted(self) -> bool:
        return self.null > 0 or self.statistics


def measure_unit(tensor: TensorRef, specs: Sequence[MatrixSpec], parallel: bool = True,
                 extras: Extras = Extras(), packed: bool = False) -> list[MatrixResult]:
    """Spanning-tree values of every matrix a tensor yields, in the order of ``specs`` (and the ``extras``).

    ``parallel``: split big matrices over all cores (see :func:`layer_tree`). The heads of a tensor are measured
    together, in one call (see :mod:`~neural_persistence.core.stacked`). A whole matrix's null model takes its
    largest values from the tree's own pass. ``packed``: the null trees as the database stores them (bfloat16
    keys go straight into their blob)."""
    data = read_tensor(tensor)
    labels = [f"{tensor.file}: tensor {tensor.name!r}" + _matrix_label(s) for s in specs]
    stack = cut_stack(data, specs) if _heads_together(specs, parallel) else None
    if stack is not None:
        trees = tree_values_stack(to_key_stack(stack, labels[0]), labels)
        matrices = None
    else:
        matrices = [to_keys(cut(data, spec), label) for spec, label in zip(specs, labels)]
        trees = [layer_tree(keys, name=label, parallel=parallel,
                            at_least=ranks_needed(*keys.shape, extras.null, extras.seed))
                 for keys, label in zip(matrices, labels)]
    added: list[dict[str, Any]] = [{} for _ in specs]
    if extras.wanted():
        for i, (spec, label, tree, more) in enumerate(zip(specs, labels, trees, added)):
            keys = matrices[i] if matrices is not None else to_keys(cut(data, spec), label)
            if extras.null > 0:
                found = np.concatenate(null_tree_keys(keys, extras.null, extras.seed, top=tree.top))
                if packed and keys.float_dtype == "bfloat16":
                    more["nulls"] = pack_bfloat16_keys(found)
                else:
                    values = keys.decode(found).reshape(extras.null, -1)
                    more["nulls"] = pack_tree(values.ravel()) if packed else values
                more["null_seed"] = extras.seed
            if extras.statistics:
                more["statistics"] = tuple(weight_statistics(keys).as_dict().values())
    del data, stack, matrices
    return [MatrixResult(s.role, s.head, s.expert, s.block, s.rows, s.cols, t.max_abs, t.values, **more)
            for s, t, more in zip(specs, trees, added)]


def _matrix_label(spec: MatrixSpec) -> str:
    return (f" expert {spec.expert}" if spec.expert >= 0 else "") + (f" {spec.role} head {spec.head}"
                                                                      if spec.head >= 0 else "")


def _heads_together(specs: Sequence[MatrixSpec], parallel: bool) -> bool:
    """Heads, and none so big that it would rather be split over the cores."""
    return len(specs) > 1 and all(s.head >= 0 for s in specs) and (
        not parallel or max(s.rows * s.cols for s in specs) < SPLIT_LAYER)


def _measure_packed(
    tensor: TensorRef, specs: Sequence[MatrixSpec], parallel: bool, prefetch: Sequence[TensorRef] = (),
    extras: Extras = Extras(),
) -> list[MatrixResult]:
    """:func:`measure_unit` with the trees packed for the database, by the worker: the client only writes.

    ``prefetch``: tensors whose reading from the disk starts now (this one, or those measured soon after)."""
    for ref in prefetch:
        try:
            prefetch_tensor(ref)
        except (OSError, ValueError, KeyError):
            pass  # only a hint: the unit itself reports any problem with its file
    return [replace(r, tree=pack_tree(r.tree) if isinstance(r.tree, np.ndarray) else r.tree,
                    nulls=pack_tree(r.nulls.ravel()) if isinstance(r.nulls, np.ndarray) else r.nulls)
            for r in measure_unit(tensor, specs, parallel, extras, packed=True)]


def describe(paths: Sequence[str | Path], per_head: bool = False, include_embeddings: bool = False,
             hub: HubOptions = HubOptions()) -> list[dict]:
    """What ``analyze`` would measure: one dict per matrix (run, checkpoint, step, tensor, block, role, head,
    expert, shape, dtype, format). ``analyze`` stores exactly these matrices, one row each."""
    planned = plan_units(paths, PlanOptions(per_head, include_embeddings), hub=hub)
    return [
        {"run": u.run, "checkpoint": u.checkpoint.name, "step": u.checkpoint.step, "tensor": s.tensor,
         "block": s.block, "role": s.role, "head": s.head, "expert": s.expert, "rows": s.rows, "cols": s.cols,
         "dtype": u.tensor.dtype, "format": u.checkpoint.format}
        for u in planned.units for s in u.specs
    ]


def analyze(
    paths: Sequence[str | Path],
    out: str | Path,
    *,
    per_head: bool = False,
    include_embeddings: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    scheduler_timeout: float = 10.0,
    progress: bool | Callable[[int, int, str], None] = False,
    null: int = 0,
    null_seed: int = 0,
    baselines: bool = False,
    revisions: str | None = None,
    cache_dir: str | Path | None = None,
) -> AnalysisSummary:
    """Measure every linear map of every checkpoint under ``paths`` into ``out/results.sqlite``.

    Parameters
    ----------
    paths
        Checkpoints: HF model directories, ``.safetensors``, ``.bin`` or ``.gguf`` files, Distributed
        Checkpoint or DeepSpeed folders, directories of checkpoints, or ``ORG/NAME`` of a repository in the local
        hub cache. Each path is one run, identified by its resolved path and labelled with its folder's name
        (``name-2`` when another run of the database has that name).
    out
        Output directory; holds the database. Running again computes only what is missing.
    per_head
        Cut q, k, v (rows) and o (columns) into attention heads, using the head counts of ``config.json``.
    include_embeddings
        Also measure embeddings and the LM head (listed but skipped by default).
    workers
        Threads of the local pool (default: all cores).
    scheduler
        Address of a Dask scheduler (``tcp://host:8786``); workers read the tensors from the same paths.
    scheduler_timeout
        Seconds to try to reach the scheduler; then a ValueError that names the address.
    progress
        True for a progress bar on the terminal, or a callback ``(done, total, what)``.
    null, null_seed
        Samples of the null model per matrix (NP of its entries shuffled; 0: none) and the seed of their draws.
        Asking for more samples later measures the tensors again with the longer sequence of the same seed.
    baselines
        Also store each matrix's weight statistics (rms, outlier ratio, excess kurtosis, spread, Frobenius norm).
    revisions, cache_dir
        For ``ORG/NAME`` paths: a glob of revision names (``'step*'``; default ``main``) and the hub cache (default
        ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``). Nothing is downloaded.

    Returns
    -------
    AnalysisSummary
        Tensors measured and already done; every error, named by checkpoint and tensor.

    Notes
    -----
    At the end, every tensor of the plan is checked to have exactly as many stored matrices as its plan has; a
    tensor that has not is recorded as an error (and measured again by the next call), never left as a smaller
    table.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {workers}")
    if null < 0:
        raise ValueError(f"`null` must be 0 (off) or a number of samples, got {null}")
    extras = Extras(null, null_seed, baselines)
    if not scheduler_timeout > 0:
        raise ValueError(f"`scheduler_timeout` must be positive, got {scheduler_timeout}")
    summary = AnalysisSummary(Path(out))
    options = PlanOptions(per_head, include_embeddings)
    key = options.key
    with _gc_skips_older_objects(), Store(out) as store:
        if store.migrated:
            summary.notes.append(store.migrated)
        planned = plan_units(paths, options, store.run_labels(), HubOptions(revisions, cache_dir))
        for run, path in planned.runs.items():
            store.add_run(run, path)
        for run, ckpt in planned.checkpoints:
            store.add_checkpoint(run, ckpt.name, ckpt.step, ckpt.tokens, str(ckpt.path))
        store.add_planned(key, [u.key for u in planned.units])
        failed: set[tuple[str, str, str]] = set()
        for problem in planned.problems:
            store.save_error(problem.run, problem.checkpoint.name, problem.tensor, key, problem.message)
            summary.errors.append((problem.checkpoint.name, problem.tensor, problem.message))
        # What an earlier run added is kept: a tensor measured again gets it again (with the same seed).
        had_samples, had_seed, had_statistics = store.extras_stored(key)
        if had_seed is not None and (null == 0 or had_seed == null_seed):
            extras = Extras(max(null, had_samples), had_seed, extras.statistics)
        if had_statistics:
            extras = Extras(extras.null, extras.seed, True)
        complete = store.complete(key)
        ready = store.with_extras(key, null, null_seed, baselines) if (null > 0 or baselines) else None
        todo = [u for u in planned.units if complete.get(u.key) != u.signature
                or (ready is not None and u.key not in ready)]
        summary.skipped_done = len(planned.units) - len(todo)
        report = _progress(progress, len(todo))
        try:
            for unit, result in _execute(todo, workers, scheduler, scheduler_timeout, extras):
                if isinstance(result, BaseException):
                    message = str(result) if _names_file(result, unit) else f"{unit.tensor.file}: tensor {unit.tensor.name!r}: {result}"
                    store.save_error(unit.run, unit.checkpoint.name, unit.tensor.name, key, message)
                    summary.errors.append((unit.checkpoint.name, unit.tensor.name, message))
                    failed.add(unit.key)
                else:
                    store.save(unit.run, unit.checkpoint.name, unit.tensor.name, key, result, unit.signature)
                    summary.measured += 1
                report(f"{unit.checkpoint.name} {unit.tensor.name}")
        finally:
            report(None)
        _check_complete(store, key, [u for u in planned.units if u.key not in failed], summary)
    return summary


def _check_complete(store: Store, key: str, units: Sequence[Unit], summary: AnalysisSummary) -> None:
    """Every measured tensor has exactly the matrices its plan has; a tensor that has not becomes an error.
    (The connection sees its own uncommitted rows: nothing needs committing first.)"""
    counts = store.stored_counts(key)
    for unit in units:
        stored = counts.get(unit.key, 0)
        if stored != len(unit.specs):
            message = (f"{unit.tensor.file}: tensor {unit.tensor.name!r}: {stored} matrices stored where the plan has "
                       f"{len(unit.specs)}; its rows are dropped and it is measured again on the next run")
            store.save_error(unit.run, unit.checkpoint.name, unit.tensor.name, key, message)
            summary.errors.append((unit.checkpoint.name, unit.tensor.name, message))


@contextmanager
def _gc_skips_older_objects() -> Iterator[None]:
    """Python's cycle collector ignores, for the duration, the objects that existed before (``gc.freeze``).

    The collector stops every thread while it walks the objects it tracks; after numba's imports a full collection
    takes 30-40 ms, and one often falls due as an analysis starts. Set aside are the modules and whatever was
    loaded before the call (numba's kernels too, once a first matrix has been measured); objects created during
    the call are collected as usual. A process that froze objects itself (before forking) is left as it is."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _names_file(err: BaseException, unit: Unit) -> bool:
    return str(unit.tensor.file) in str(err)


def _execute(units: list[Unit], workers: int | None, scheduler: str | None,
             scheduler_timeout: float = 10.0, extras: Extras = Extras()) -> Iterable[tuple[Unit, Any]]:
    """(unit, rows or the exception it raised), as units finish."""
    if scheduler is not None:
        yield from _execute_dask(units, scheduler, scheduler_timeout, extras)
        return
    workers = workers or available_threads()
    # Several workers each read whole tensors on one thread; a single worker splits big ones over all cores.
    parallel = workers == 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="np-analyze") as pool:
        # Each tensor's disk read is asked for once: the first units' by themselves, the others' by the unit that
        # runs `workers` places before them.
        hints = [[u.tensor] if i < workers else [] for i, u in enumerate(units)]
        for i in range(len(units) - workers):
            hints[i].append(units[i + workers].tensor)
        futures: dict[Future[list[MatrixResult]], Unit] = {
            pool.submit(_measure_packed, u.tensor, u.specs, parallel, h, extras): u for u, h in zip(units, hints)
        }
        for future in as_completed(futures):
            err = future.exception()
            yield futures[future], err if err is not None else future.result()


def _execute_dask(units: list[Unit], scheduler: str, timeout: float,
                  extras: Extras = Extras()) -> Iterable[tuple[Unit, Any]]:
    from .._optional import require

    distributed = require("dask.distributed", "dask")
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ValueError(f"cannot reach the Dask scheduler at {scheduler} within {timeout:g} s ({err}); is it running, "
                         "and is the address right? (--scheduler-timeout waits longer)") from None
    with client:
        futures = {client.submit(_measure_packed, u.tensor, u.specs, True, [u.tensor], extras, pure=False): u
                   for u in units}
        for future in distributed.as_completed(list(futures)):
            unit = futures[future]
            if future.status == "error":
                yield unit, future.exception()
            else:
                yield unit, future.result()


def _progress(progress: bool | Callable[[int, int, str], None], total: int) -> Callable[[str | None], None]:
    """A reporter called once per finished unit (and with None at the end)."""
    if callable(progress):
        state = {"done": 0}

        def call(what: str | None) -> None:
            if what is not None:
                state["done"] += 1
                progress(state["done"], total, what)  # type: ignore[operator]

        return call
    if not progress or total == 0:
        return lambda what: None
    if not sys.stderr.isatty():  # a file or a pipe: a line at every tenth, not a bar's control codes
        state = {"done": 0, "shown": 0}

        def line(what: str | None) -> None:
            if what is None:
                return
            state["done"] += 1
            tenth = state["done"] * 10 // total
            if tenth > state["shown"]:
                state["shown"] = tenth
                print(f"measured {state['done']}/{total} tensors", file=sys.stderr, flush=True)

        return line
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]measuring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.description}"))
    bar.start()
    task = bar.add_task("", total=total)

    def advance(what: str | None) -> None:
        if what is None:
            bar.stop()
        else:
            bar.update(task, advance=1, description=what)

    return advance
