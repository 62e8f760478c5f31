"""``make demo``: train a character-level GPT on the King James Bible and watch its neural persistence evolve.

1. the corpus comes from Debian's ``bible-kjv`` (cached in ``.data/``);
2. a 4-layer, width-128, 4-head GPT trains on the CPU; every ``check_every`` steps the NP early-stopping rule
   records mean normalized NP, and every ``checkpoint_every`` steps a checkpoint is saved with train and held-out
   loss;
3. the checkpoints are analysed per head (``analyze --per-head``) and ``report.html`` is written with the loss
   curves, NP per role with change points, the layer x step heatmap, per-head heatmaps, and a paragraph that
   reads the numbers.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["main"]


@dataclass
class Plan:
    steps: int
    checkpoint_every: int
    check_every: int
    batch: int = 32
    lr: float = 3e-3
    eval_batches: int = 8


FULL = Plan(steps=1400, checkpoint_every=100, check_every=50)
FAST = Plan(steps=120, checkpoint_every=20, check_every=10, eval_batches=4)


@dataclass
class History:
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # step, tokens, train_loss, eval_loss
    checks: list[dict[str, Any]] = field(default_factory=list)  # step, mean_normalized_np


def train(out: Path, text: str, plan: Plan, seed: int, say: Any, **model_options: Any) -> tuple[History, Any]:
    """Train from scratch, checking NP and saving checkpoints into ``out/run``; ``model_options`` go to
    :class:`GPTConfig` (``hidden_size``, ``dropout``, ...)."""
    import torch

    import neural_persistence as npers

    from .gpt import CharGPT, GPTConfig, save_checkpoint

    vocab = "".join(sorted(set(text)))
    data = torch.from_numpy(_encode(text, vocab))
    cut = int(0.9 * len(data))
    train_data, held_out = data[:cut], data[cut:]
    torch.manual_seed(seed)
    model = CharGPT(GPTConfig(vocab_size=len(vocab), **model_options))
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(s, plan.steps) / plan.steps))
    )
    ctx = model.cfg.context
    generator = torch.Generator().manual_seed(seed)

    def batch(source: Any, g: Any = generator) -> tuple[Any, Any]:
        starts = torch.randint(0, len(source) - ctx - 1, (plan.batch,), generator=g)
        x = torch.stack([source[s : s + ctx + 1] for s in starts.tolist()])
        return x[:, :-1], x[:, 1:]

    def held_out_loss() -> float:
        model.eval()
        g = torch.Generator().manual_seed(1234)  # the same held-out batches every time
        with torch.no_grad():
            losses = [model(*batch(held_out, g))[1].item() for _ in range(plan.eval_batches)]
        model.train()
        return sum(losses) / len(losses)

    stopper = npers.EarlyStopping(patience=3, min_delta=1e-3)
    history = History()
    recent: list[float] = []
    t0 = time.perf_counter()
    for step in range(plan.steps + 1):
        if step % plan.check_every == 0:
            stopper.step(model)
            history.checks.append({"step": step, "mean_normalized_np": stopper.history[-1].value})
        if step % plan.checkpoint_every == 0 or step == plan.steps:
            tokens = step * plan.batch * ctx
            record = {"step": step, "tokens": tokens, "eval_loss": held_out_loss(),
                      "train_loss": sum(recent) / len(recent) if recent else None}
            history.checkpoints.append(record)
            save_checkpoint(model, out / "run" / f"checkpoint-{step}", step, tokens, [record], vocab)
            say(f"step {step:5d}  train loss {record['train_loss'] or float('nan'):.3f}  held-out loss "
                f"{record['eval_loss']:.3f}  mean normalized NP {history.checks[-1]['mean_normalized_np']:.4f}  "
                f"({time.perf_counter() - t0:.0f} s)")
            recent = []
        if step == plan.steps:
            break
        x, y = batch(train_data)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent.append(loss.item())
    return history, stopper


def _encode(text: str, vocab: str) -> Any:
    import numpy as np

    table = np.zeros(max(map(ord, vocab)) + 1, dtype=np.int64)
    table[[ord(c) for c in vocab]] = np.arange(len(vocab))
    return table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


def loss_bend(steps: list[int], losses: list[float], share: float = 0.8) -> int:
    """The first step by which the loss has covered ``share`` of its total decrease: where the curve bends."""
    start, end = losses[0], min(losses)
    for s, value in zip(steps, losses):
        if start - value >= share * (start - end):
            return s
    return steps[-1]


def narrative(frame: Any, by_matrix: Any, by_role: Any, history: History, stopper: Any) -> tuple[str, dict]:
    """A paragraph, and its numbers, from the analysis and the training record."""
    from ..analysis.trajectory import first_changes

    ckpts = history.checkpoints
    steps = [c["step"] for c in ckpts]
    bend = loss_bend(steps, [c["eval_loss"] for c in ckpts])
    groups = first_changes(frame, by_matrix)
    numbers: dict[str, Any] = {"loss_bend_step": bend, "final_eval_loss": ckpts[-1]["eval_loss"]}
    parts = []
    if len(groups):
        top = groups.iloc[0]
        numbers["first_changes"] = [{"step": int(g.step), "series": g.series, "sizes": g.sizes}
                                    for g in groups.head(3).itertuples()]
        largest = ", ".join(f"{n} ({v:+.3f})" for n, v in list(zip(top.series, top.sizes))[:3])
        together = (f"{top.n_series} series first changed together at step {top.step}"
                    if top.n_series > 1 else f"The first series to change was {top.series[0]}, at step {top.step}")
        parts.append(together + (", the earliest step a change point can have, so the checkpoint spacing cannot "
                                 "tell which changed first" if not top.separable else "")
                     + (f" (largest changes: {largest})." if top.n_series > 1 else "."))
    else:
        parts.append("No matrix showed a change point: every series is a smooth trend plus noise as far as "
                     f"{len(frame['step'].dropna().unique())} checkpoints can tell.")
    role_points = sorted({p for points in by_role["change_points"] for p in points})
    numbers["role_change_points"] = role_points
    before = [p for p in role_points if p <= bend]
    if role_points:
        parts.append(f"The held-out loss covered 80% of its decrease by step {bend}; "
                     f"{len(before)} of the {len(role_points)} role-level change points "
                     f"({', '.join(map(str, role_points))}) fall at or before that bend, "
                     f"{len(role_points) - len(before)} after it.")
    else:
        parts.append(f"The held-out loss covered 80% of its decrease by step {bend}; the role means have no "
                     "change point to set beside it.")
    last = frame[frame["step"] == frame["step"].max()].groupby("role")["normalized_np"].mean()
    numbers["last_role_means"] = {k: float(v) for k, v in last.items()}
    parts.append(f"At the last checkpoint the highest mean normalized NP is in {last.idxmax()} ({last.max():.3f}), "
                 f"the lowest in {last.idxmin()} ({last.min():.3f}).")
    if "null_normalized_np" in frame.columns and frame["null_normalized_np"].notna().any():
        from ..analysis.structure import structure_summary

        structure = structure_summary(frame).set_index("role")
        numbers["structure"] = {role: {"np_minus_null": float(r.np_minus_null), "r_null": float(r.r_null)}
                                for role, r in structure.iterrows()}
        most = structure["np_minus_null"].abs().idxmax()
        followed = structure.index[structure["r_null"] > 0.9].tolist()
        parts.append(f"Against the same weights shuffled (the null model, 8 shuffles per matrix), {most} differs most "
                     f"from its null at the last checkpoint ({structure.loc[most, 'np_minus_null']:+.3f} normalized "
                     f"NP); " + (f"the trajectories of {', '.join(followed)} follow their nulls (r > 0.9), so "
                                 "there NP's course restates the weights' distribution."
                                 if followed else "no role's trajectory follows its null closely (all r <= 0.9)."))
    if stopper.stopped_at is not None:
        stop_step = history.checks[stopper.stopped_at]["step"]
        near = max((c for c in ckpts if c["step"] <= stop_step), key=lambda c: c["step"])
        numbers.update(np_stop_step=stop_step, eval_loss_at_stop=near["eval_loss"])
        delta = near["eval_loss"] - ckpts[-1]["eval_loss"]
        parts.append(f"The NP stopping rule (patience {stopper.patience}, min_delta {stopper.min_delta}) would have "
                     f"stopped at step {stop_step}, without looking at any validation data; the held-out loss there "
                     f"was {near['eval_loss']:.3f} against {ckpts[-1]['eval_loss']:.3f} at the end "
                     f"({'+' if delta >= 0 else ''}{delta:.3f}).")
    else:
        numbers["np_stop_step"] = None
        parts.append(f"The NP stopping rule (patience {stopper.patience}, min_delta {stopper.min_delta}) did not "
                     f"trigger: mean normalized NP was still rising by more than min_delta; the final held-out loss "
                     f"is {ckpts[-1]['eval_loss']:.3f}.")
    return " ".join(parts), numbers


def loss_figure(history: History, stopper: Any, path: Path) -> list[Path]:
    from ..analysis.plots import _pyplot, save

    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    ck = [c for c in history.checkpoints if c["train_loss"] is not None]
    a.plot([c["step"] for c in ck], [c["train_loss"] for c in ck], marker=".", label="train")
    a.plot([c["step"] for c in history.checkpoints], [c["eval_loss"] for c in history.checkpoints], marker=".",
           label="held-out")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy (nats / char)")
    a.set_title("loss")
    a.legend()
    b.plot([c["step"] for c in history.checks], [c["mean_normalized_np"] for c in history.checks], marker=".",
           color="C2")
    if stopper.stopped_at is not None:
        b.axvline(history.checks[stopper.stopped_at]["step"], color="C3", ls="--", label="NP rule stops")
        b.legend()
    b.set_xlabel("step")
    b.set_ylabel("mean normalized NP")
    b.set_title("neural persistence during training")
    return save(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fast", action="store_true", help=f"{FAST.steps} steps instead of {FULL.steps}")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="corpus cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from rich.console import Console

    from ..analysis.analyze import analyze
    from ..analysis.report import report
    from ..analysis.table import load_table
    from ..analysis.trajectory import change_summary
    from .corpus import CorpusMissingError, load_kjv

    console = Console()
    plan = FAST if args.fast else FULL
    t0 = time.perf_counter()
    try:
        text = load_kjv(args.data_dir)
    except CorpusMissingError as err:  # a sentence that says what to do, not a traceback
        raise SystemExit(f"error: {err}") from None
    console.print(f"[bold]corpus[/bold]: King James Bible, {len(text):,} characters")
    out = args.out
    for stale in ("run", "plots", "results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "report.html"):
        target = out / stale
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]training[/bold] a 4-layer char-level GPT for {plan.steps} steps (CPU)")
    history, stopper = train(out, text, plan, args.seed, console.print)
    console.print("[bold]analysing[/bold] every checkpoint, per head")
    analyze([out / "run"], out, per_head=True, progress=True, null=8, baselines=True)  # NP beside its shuffles
    frame = load_table(out)
    by_role = change_summary(frame, by="role")
    by_matrix = change_summary(frame, by="matrix")
    paragraph, numbers = narrative(frame, by_matrix, by_role, history, stopper)
    (out / "plots").mkdir(exist_ok=True)
    figures = loss_figure(history, stopper, out / "plots" / "loss")
    sections = [
        ("Loss and neural persistence during training", f'<img src="plots/{figures[0].name}" alt="loss">'),
        ("What the numbers say", f"<p>{html.escape(paragraph)}</p>"),
    ]
    result = report(out, extra_sections=sections, metrics=False)  # its own loss figure, with the stopping point
    numbers["history"] = {"checkpoints": history.checkpoints, "checks": history.checks}
    (out / "summary.json").write_text(json.dumps(numbers, indent=1, default=float))
    console.print(f"\n[bold]{paragraph}[/bold]\n")
    console.print(f"report: {result.html.resolve()}  ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
