"""Do NP's change points find a known training phase? Induction heads (Olsson et al. 2022), measured independently.

Small Llama-architecture transformers (transformers' ``LlamaForCausalLM``, saved with ``save_pretrained``) of two
layers learn sequences made of a random span of tokens repeated once: the second copy can only be predicted by
looking back (an induction head: attend to the token after the previous occurrence of the current one, and copy
it). "Attention-only" runs keep their MLPs at zero and frozen (their maps contribute nothing; they are measured as
all-zero matrices under global normalization); one run per width keeps its MLPs. Measured at every checkpoint,
without NP:

* each head's **prefix-matching score**: its mean attention, from a token of the second copy, to the position
  right after that token's earlier occurrence (1: a perfect induction head);
* the **in-context learning score**: mean loss on the second copy minus mean loss on the first (negative once the
  model copies);
* the **transition step**: the first checkpoint where the best head's prefix-matching score reaches half of its
  final value.

Then, as a user would: ``neural-persistence analyze --per-head --null 8 --baselines`` of every run's checkpoints,
the change points of each head's series (NP, its null, and the head's rms as the plain baseline), and NP's
stopping rule on mean normalized NP. Writes ``runs.csv`` (per run), ``heads.csv`` (per head), ``markers.csv`` (the
independent measurements per checkpoint), ``induction.png``; the full profile's results go to
``experiments/results/DYNAMICS.md``.

Run: ``python experiments/dynamics/induction.py --profile quick|full [--out DIR]``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

PROFILES = {
    # steps, checkpoint every, seeds, widths
    "quick": dict(steps=80, every=20, seeds=(0,), widths=(32,), span=12, vocab=32, batch=16),
    "full": dict(steps=1500, every=25, seeds=(0, 1, 2), widths=(32, 64), span=24, vocab=48, batch=32),
}


@dataclass(frozen=True)
class RunSpec:
    name: str
    width: int
    seed: int
    mlp: bool


def batch_of(rng: np.random.Generator, size: int, span: int, vocab: int) -> torch.Tensor:
    """Random spans repeated once: [r_1 .. r_span, r_1 .. r_span]."""
    first = rng.integers(1, vocab, size=(size, span))
    return torch.from_numpy(np.concatenate([first, first], axis=1))


def model_for(spec: RunSpec, vocab: int, span: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(spec.seed)
    config = tf.LlamaConfig(vocab_size=vocab, hidden_size=spec.width, intermediate_size=2 * spec.width,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                            max_position_embeddings=2 * span, bos_token_id=0, eos_token_id=0,
                            attn_implementation="eager")
    model = tf.LlamaForCausalLM(config)
    if not spec.mlp:
        for layer in model.model.layers:
            for param in layer.mlp.parameters():
                param.data.zero_()
                param.requires_grad_(False)
    return model


def markers(model: torch.nn.Module, probe: torch.Tensor, span: int) -> dict[str, float]:
    """Prefix-matching score of every head and the in-context learning score, on a fixed probe batch."""
    model.eval()
    with torch.no_grad():
        out = model(probe, labels=probe, output_attentions=True)
        logits = out.logits[:, :-1]
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), probe[:, 1:].reshape(-1),
                                                   reduction="none").reshape(probe.shape[0], -1)
    model.train()
    row = {"loss": float(out.loss), "icl": float(losses[:, span:].mean() - losses[:, : span - 1].mean())}
    queries = torch.arange(span, 2 * span)
    keys = queries - span + 1  # the position after the earlier occurrence of the query's token
    for layer, attention in enumerate(out.attentions):  # (batch, heads, query, key)
        scores = attention[:, :, queries, keys].mean(dim=(0, 2))
        for head, score in enumerate(scores.tolist()):
            row[f"prefix_{layer}_{head}"] = score
    return row


def train_run(spec: RunSpec, profile: dict, work: Path) -> pd.DataFrame:
    model = model_for(spec, profile["vocab"], profile["span"])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.01)
    rng = np.random.default_rng(1000 + spec.seed)
    probe = batch_of(np.random.default_rng(99), 64, profile["span"], profile["vocab"])
    rows = []
    for step in range(profile["steps"] + 1):
        if step % profile["every"] == 0:
            model.save_pretrained(work / spec.name / f"checkpoint-{step}")
            rows.append({"run": spec.name, "step": step, **markers(model, probe, profile["span"])})
        if step == profile["steps"]:
            break
        x = batch_of(rng, profile["batch"], profile["span"], profile["vocab"])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pd.DataFrame(rows)


def transition(marks: pd.DataFrame) -> tuple[int | None, str | None]:
    """(step, head) where the best final head's prefix-matching score first reaches half its final value."""
    heads = [c for c in marks.columns if c.startswith("prefix_")]
    last = marks.iloc[-1][heads]
    best = str(last.idxmax())
    if last[best] < 0.2:
        return None, None  # no induction head formed
    reached = marks[marks[best] >= 0.5 * last[best]]
    return int(reached["step"].iloc[0]), best


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = args.out or Path(__file__).resolve().parent / "results" / args.profile
    work = out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    specs = [RunSpec(f"w{w}-attn-seed{s}", w, s, False) for w in profile["widths"] for s in profile["seeds"]]
    specs += [RunSpec(f"w{w}-mlp-seed0", w, 0, True) for w in profile["widths"]]
    marks, train_seconds = [], {}
    for spec in specs:
        t0 = time.perf_counter()
        marks.append(train_run(spec, profile, work))
        train_seconds[spec.name] = time.perf_counter() - t0
        print(f"trained {spec.name} in {train_seconds[spec.name]:.0f} s", flush=True)
    marks_frame = pd.concat(marks, ignore_index=True)
    marks_frame.to_csv(out / "markers.csv", index=False)

    from neural_persistence.analysis.table import load_table
    from neural_persistence.analysis.trajectory import change_summary
    from neural_persistence.cli import main as cli
    from neural_persistence.training.early_stopping import first_stop

    t0 = time.perf_counter()
    runs = [str(work / s.name) for s in specs]
    assert cli(["analyze", *runs, "--out", str(out / "np"), "--per-head", "--null", "8", "--baselines"]) == 0
    np_seconds = time.perf_counter() - t0
    checkpoints = len(marks_frame)
    table = load_table(out / "np", per_head=True)
    heads = table[table["head"] >= 0]
    np_changes = change_summary(heads, by="matrix")
    null_frame = heads.assign(normalized_np=heads["null_normalized_np"])
    null_changes = change_summary(null_frame, by="matrix")
    rms_frame = heads.assign(normalized_np=heads["rms"])
    rms_changes = change_summary(rms_frame, by="matrix")
    key = ["run", "block", "role", "head"]
    merged = np_changes[key + ["first_change", "n_change_points"]].merge(
        null_changes[key + ["first_change"]].rename(columns={"first_change": "null_first_change"}), on=key).merge(
        rms_changes[key + ["first_change"]].rename(columns={"first_change": "rms_first_change"}), on=key)
    head_rows, run_rows = [], []
    for spec in specs:
        mine = marks_frame[marks_frame["run"] == spec.name].reset_index(drop=True)
        step, best = transition(mine)
        last = mine.iloc[-1]
        for (block, head), _ in heads[heads["run"] == spec.name].groupby(["block", "head"]):
            score = float(last[f"prefix_{int(block)}_{int(head)}"])
            part = merged[(merged["run"] == spec.name) & (merged["block"] == block) & (merged["head"] == head)]
            firsts = part["first_change"].dropna()
            head_rows.append({"run": spec.name, "block": int(block), "head": int(head), "final_prefix_score": score,
                              "induction": score >= 0.2, "np_first_change": firsts.min() if len(firsts) else None,
                              "null_first_change": part["null_first_change"].dropna().min()
                              if part["null_first_change"].notna().any() else None,
                              "rms_first_change": part["rms_first_change"].dropna().min()
                              if part["rms_first_change"].notna().any() else None,
                              "roles_with_change": ", ".join(part.dropna(subset=["first_change"])["role"])})
        mine_np = table[(table["run"] == spec.name) & table["role"].isin(["q", "k", "v", "o"] +
                                                                         (["mlp_up", "mlp_gate", "mlp_down"] if spec.mlp else []))]
        mean_np = mine_np.groupby("step")["normalized_np"].mean()  # frozen zero MLPs left out
        stop = first_stop(mean_np.to_numpy(), patience=3, min_delta=1e-3)
        run_rows.append({"run": spec.name, "width": spec.width, "seed": spec.seed, "mlp": spec.mlp,
                         "transition_step": step, "transition_head": best,
                         "final_icl": float(last["icl"]), "final_loss": float(last["loss"]),
                         "np_stop_step": int(mean_np.index[stop]) if stop is not None else None,
                         "train_seconds": round(train_seconds[spec.name], 1)})
    head_frame, run_frame = pd.DataFrame(head_rows), pd.DataFrame(run_rows)
    for frame in (head_frame,):
        frame["lag_np"] = [None if r.np_first_change is None or (isinstance(r.np_first_change, float) and
                                                                 math.isnan(r.np_first_change))
                           else r.np_first_change - run_frame.set_index("run").loc[r.run, "transition_step"]
                           if run_frame.set_index("run").loc[r.run, "transition_step"] is not None else None
                           for r in frame.itertuples()]
    run_frame["np_seconds_per_checkpoint"] = round(np_seconds / checkpoints, 3)
    head_frame.to_csv(out / "heads.csv", index=False)
    run_frame.to_csv(out / "runs.csv", index=False)
    _plot(marks_frame, table, run_frame, out / "induction.png")
    print(run_frame.to_string(index=False))
    print(head_frame.to_string(index=False))
    return run_frame


def _plot(marks: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs["run"])
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.6), squeeze=False, sharex="col")
    for i, name in enumerate(names):
        mine = marks[marks["run"] == name]
        for column in [c for c in mine.columns if c.startswith("prefix_")]:
            axes[0][i].plot(mine["step"], mine[column], lw=0.8)
        axes[0][i].set_title(name, fontsize=9)
        axes[0][i].set_ylabel("prefix-matching score" if i == 0 else "")
        heads = table[(table["run"] == name) & (table["head"] >= 0) & (table["role"] == "v")]
        for (block, head), part in heads.groupby(["block", "head"]):
            part = part.sort_values("step")
            axes[1][i].plot(part["step"], part["normalized_np"], lw=0.8)
        axes[1][i].set_ylabel("per-head NP of v" if i == 0 else "")
        axes[1][i].set_xlabel("step")
        step = runs.set_index("run").loc[name, "transition_step"]
        if step is not None and step == step:
            for ax in (axes[0][i], axes[1][i]):
                ax.axvline(step, color="k", ls="--", lw=0.8)
    fig.suptitle("induction heads (top) and per-head NP of v (bottom); dashed: the transition", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1:])
