"""Neural persistence across recipes and model sizes, and NP early stopping without a validation set.

Trains the demo's character-level GPT on the King James Bible in several variants (same data, same seed):

* recipes at width 128: the base run (lr 3e-3, no dropout), with dropout 0.1, and with lr 1e-3;
* sizes: widths 64, 128 (the base run) and 256;

records mean normalized NP every ``check_every`` steps and saves checkpoints, analyses each run, and writes into
``experiments/results/``: ``recipes.png`` and ``sizes_step.png`` / ``sizes_tokens.png`` (NP against step and
tokens on common axes, via ``compare``), and ``RESULTS.md`` with, per run and per patience g, the step where the
NP rule stops next to the step of minimum held-out loss and the held-out loss lost (+) or gained (-) there.

Run: ``python experiments/recipes_and_sizes.py [--steps 800] [--out experiments/results]`` (about 25 minutes on
2 cores with the defaults; ``--steps 60`` for a smoke run).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import neural_persistence as npers
from neural_persistence.analysis.analyze import analyze
from neural_persistence.analysis.plots import compare_runs, role_trajectory_plot, save
from neural_persistence.analysis.table import load_table
from neural_persistence.demo.corpus import load_kjv
from neural_persistence.demo.run import Plan, train

RUNS = {
    "w128-base": dict(hidden_size=128),
    "w128-dropout0.1": dict(hidden_size=128, dropout=0.1),
    "w128-lr1e-3": dict(hidden_size=128, lr=1e-3),
    "w64": dict(hidden_size=64),
    "w256": dict(hidden_size=256),
}
RECIPES = ["w128-base", "w128-dropout0.1", "w128-lr1e-3"]
SIZES = ["w64", "w128-base", "w256"]
PATIENCES = [1, 2, 3, 5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=Path("experiments/results"))
    parser.add_argument("--work", type=Path, default=Path(".data/experiments"), help="checkpoints (not committed)")
    parser.add_argument("--min-delta", type=float, default=1e-3)
    args = parser.parse_args()
    text = load_kjv()
    args.out.mkdir(parents=True, exist_ok=True)
    frames, histories = {}, {}
    for name, options in RUNS.items():
        options = dict(options)
        lr = options.pop("lr", 3e-3)
        work = args.work / name
        shutil.rmtree(work, ignore_errors=True)
        plan = Plan(steps=args.steps, checkpoint_every=max(args.steps // 10, 1), check_every=max(args.steps // 20, 1),
                    lr=lr)
        print(f"== {name}: {options}, lr {lr}", flush=True)
        history, _ = train(work, text, plan, 0, lambda msg: print(msg, flush=True), **options)
        analyze([work / "run"], work / "np")
        frames[name] = load_table(work / "np").assign(run=name)
        histories[name] = history
    save(role_trajectory_plot(__import__("pandas").concat([frames[n] for n in RECIPES])), args.out / "recipes_roles")
    save(compare_runs({n: frames[n] for n in RECIPES}, "step"), args.out / "recipes")
    save(compare_runs({n: frames[n] for n in SIZES}, "step"), args.out / "sizes_step")
    save(compare_runs({n: frames[n] for n in SIZES}, "tokens"), args.out / "sizes_tokens")
    lines = ["# Recipes, sizes and NP early stopping (char-level GPT on the King James Bible)", "",
             f"Each run: {args.steps} steps of batch 32 x 128 characters, same data and seed; NP checked every "
             f"{max(args.steps // 20, 1)} steps; rule: stop when mean normalized NP has not risen by more than "
             f"{args.min_delta} for g checks.", "",
             "| run | final held-out loss | min held-out loss (step) | final mean normalized NP | "
             + " | ".join(f"g={g}: stop step, held-out loss +/-" for g in PATIENCES) + " |",
             "|---|---|---|---|" + "---|" * len(PATIENCES)]
    for name, history in histories.items():
        ckpts = history.checkpoints
        best = min(ckpts, key=lambda c: c["eval_loss"])
        values = [c["mean_normalized_np"] for c in history.checks]
        cells = []
        for g in PATIENCES:
            stop = npers.first_stop(values, patience=g, min_delta=args.min_delta)
            if stop is None:
                cells.append("no stop")
                continue
            step = history.checks[stop]["step"]
            near = max((c for c in ckpts if c["step"] <= step), key=lambda c: c["step"])
            cells.append(f"{step}, {near['eval_loss'] - best['eval_loss']:+.3f}")
        lines.append(f"| {name} | {ckpts[-1]['eval_loss']:.3f} | {best['eval_loss']:.3f} ({best['step']}) | "
                     f"{values[-1]:.4f} | " + " | ".join(cells) + " |")
    lines += ["", "Held-out loss +/-: the held-out loss at the last checkpoint before the NP stop, minus the minimum "
              "held-out loss of the run (positive: stopping there costs that much). The table's NP is the one the "
              "rule watched during training (every Linear layer of the model, LM head included); the plots come "
              "from the checkpoint analysis (attention and MLP matrices only, LM head and embeddings skipped), so "
              "their levels differ slightly.", "",
              "![recipes](recipes.png) ![recipes per role](recipes_roles.png)", "",
              "![sizes by step](sizes_step.png) ![sizes by tokens](sizes_tokens.png)", ""]
    (args.out / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
