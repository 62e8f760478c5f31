"""Do NP's change points find a known training phase? Induction heads (Olsson et al. 2022), measured independently.

Small Llama-architecture transformers (transformers' ``LlamaForCausalLM``, saved with ``save_pretrained``) of two
layers with 4 heads each learn sequences in which a span of tokens is repeated once: the second copy can only be
predicted by looking back, which two-layer models learn with an *induction circuit* (a previous-token head in
layer 0, an induction head in layer 1 that attends to the token after the earlier occurrence of the current one
and copies it). "Attention-only" runs keep their MLPs at zero and frozen (left out of every measure); one run per
width keeps its MLPs. Two kinds of data:

* ``quick`` / ``full``: random tokens with one span of 10-20 repeated at a random offset (widths 64 and 96, 3000
  steps, a checkpoint every 25);
* ``kjv-quick`` / ``kjv-full``: windows of the KJV corpus (characters, the demo's text) with one passage of 24-31
  characters copied later in the window (width 64, 1500 steps, a checkpoint every 10).
  Plain KJV windows gave no induction head at this scale (see ``PROFILES``), so the copy is the phase's trigger
  and the text sets the statistics of everything around it.

Measured at every checkpoint, without NP (``markers.csv``):

* each head's **prefix-matching score**: its mean attention, from a token of the second copy, to the position right
  after that token's earlier occurrence (1: a perfect induction head), and its **previous-token score**;
* the **in-context learning score**: mean loss on the second copy minus mean loss on the first, and the loss;
* the **transition step** of a run: the first checkpoint where its best head's prefix-matching score reaches half
  of its final value; of each induction head, the same on its own score.

Heads are classed by their final scores: *induction* (layer 1, prefix-matching >= 0.2), *previous-token* (layer 0,
previous-token >= 0.3), the rest *other*. Then, on the same folders:

* as a user runs it, ``neural-persistence analyze --per-head --null 8 --baselines``; each head's series of NP, its
  null, the structural part (NP - null) and rms; their change points near the transition and their moves across
  it (:mod:`study`); NP's stopping rule on mean normalized NP;
* devinterp's local learning coefficient (SGLD on training batches; every 150 steps, 50 on KJV) and
  WeightWatcher's alpha per layer (every checkpoint), timed (:mod:`peers`).

Writes ``markers.csv``, ``peers.csv``, ``heads.csv``, ``runs.csv``, ``summary.csv`` and ``induction.png`` under
``--out`` (default ``results/<profile>``); the full profile's tables are in ``experiments/results/DYNAMICS.md``.

Run: ``python experiments/dynamics/induction.py --profile quick|full|kjv-quick|kjv-full [--out DIR]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
import study  # noqa: E402


@dataclass(frozen=True)
class Profile:
    steps: int
    dense_until: int  # a checkpoint every `dense_every` steps up to here, then every `sparse_every`
    dense_every: int
    sparse_every: int
    llc_every: tuple[int, int]  # LLC every so many steps in the dense part, then in the sparse part
    seeds: tuple[int, ...]
    widths: tuple[int, ...]
    length: int
    spans: tuple[int, int]  # shortest and longest repeated span
    vocab: int
    batch: int
    heads: int = 4
    text: bool = False  # rows are windows of the KJV corpus (characters) with one passage copied, not random tokens
    lr: float = 3e-3
    window: int = 50  # steps either side of a transition that count as "at the transition"
    llc: peers.LLCSettings = field(default_factory=peers.LLCSettings)

    def checkpoints(self) -> list[int]:
        dense = range(0, self.dense_until + 1, self.dense_every)
        sparse = range(self.dense_until + self.sparse_every, self.steps + 1, self.sparse_every)
        return [*dense, *sparse]

    def llc_steps(self) -> list[int]:
        dense, sparse = self.llc_every
        return [s for s in self.checkpoints() if (s <= self.dense_until and s % dense == 0) or s % sparse == 0]


PROFILES = {
    "quick": Profile(steps=60, dense_until=60, dense_every=6, sparse_every=6, llc_every=(1000, 1000), seeds=(0,),
                     widths=(32,), length=24, spans=(4, 8), vocab=32, batch=16, window=12,
                     llc=peers.LLCSettings(chains=1, draws=10)),
    "full": Profile(steps=3000, dense_until=3000, dense_every=25, sparse_every=25, llc_every=(150, 150),
                    seeds=(0, 1, 2), widths=(64, 96), length=48, spans=(10, 20), vocab=48, batch=32,
                    llc=peers.LLCSettings(chains=2, draws=60)),
    # Natural text: on plain KJV windows no induction head formed at this scale (3000 steps, width 64, context
    # 128: best prefix-matching score 0.01), nor with a copied passage of 10-20 characters in 64 (2000 steps);
    # with one of 24-31 characters (about half the window, the repeated-sequence setting of Olsson et al.'s probe)
    # one forms within the first 300 steps. A checkpoint every 10 steps throughout, so that a window of 30 steps
    # holds as many checkpoints at the transition as at the placebo step later on.
    "kjv-quick": Profile(steps=60, dense_until=60, dense_every=6, sparse_every=6, llc_every=(1000, 1000),
                         seeds=(0,), widths=(32,), length=32, spans=(12, 15), vocab=0, batch=16, window=12,
                         text=True, llc=peers.LLCSettings(chains=1, draws=10)),
    "kjv-full": Profile(steps=1500, dense_until=1500, dense_every=10, sparse_every=10, llc_every=(50, 50),
                        seeds=(0, 1, 2), widths=(64,), length=64, spans=(24, 31), vocab=0, batch=32, window=30,
                        text=True, llc=peers.LLCSettings(chains=2, draws=60)),
}


@functools.cache
def kjv_characters() -> tuple[np.ndarray, int]:
    """The KJV corpus (the demo's, from Debian's bible-kjv) as character ids, and the number of distinct ones."""
    from neural_persistence.demo.corpus import load_kjv

    text = load_kjv(Path(__file__).resolve().parents[2] / ".data")
    alphabet = sorted(set(text))
    lookup = {c: i for i, c in enumerate(alphabet)}
    return np.fromiter((lookup[c] for c in text), dtype=np.int64, count=len(text)), len(alphabet)


def with_vocabulary(profile: Profile) -> Profile:
    """A text profile's vocabulary is the corpus's alphabet."""
    return dataclasses.replace(profile, vocab=kjv_characters()[1]) if profile.text else profile


@dataclass(frozen=True)
class RunSpec:
    name: str
    width: int
    seed: int
    mlp: bool

    def measured(self, name: str) -> bool:
        """Whether a parameter is part of the model as trained (frozen zero MLPs are not)."""
        return self.mlp or ".mlp." not in name


@dataclass(frozen=True)
class Batch:
    """Rows of random tokens, each with one span repeated: ``tokens[r, second + j] == tokens[r, first + j]`` for
    ``j < span``. Span lengths, gaps and positions vary by row, so the repeat can only be found by content (a
    fixed offset would let a head solve it by position alone, with no induction circuit)."""

    tokens: torch.Tensor  # (rows, length)
    first: np.ndarray
    second: np.ndarray
    span: np.ndarray

    def repeat_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, query, key) for every query in a repeat whose next token is predictable, and the key an
        induction head attends to: the position right after the earlier occurrence of the query's token."""
        rows, queries, keys = [], [], []
        for r, (a, b, n) in enumerate(zip(self.first, self.second, self.span)):
            rows.append(np.full(n - 1, r))
            queries.append(np.arange(b, b + n - 1))
            keys.append(np.arange(a + 1, a + n))
        return np.concatenate(rows), np.concatenate(queries), np.concatenate(keys)


def batch_of(rng: np.random.Generator, size: int, profile: Profile) -> Batch:
    # Random tokens are drawn for text profiles too: both kinds then take the same draws for the copies' layout.
    tokens = rng.integers(1, profile.vocab, size=(size, profile.length))
    low, high = profile.spans
    spans = rng.integers(low, high + 1, size=size)
    firsts, seconds = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
    for r, n in enumerate(spans):
        gap = rng.integers(0, profile.length - 2 * n + 1)
        firsts[r] = rng.integers(0, profile.length - 2 * n - gap + 1)
        seconds[r] = firsts[r] + n + gap
    if profile.text:  # windows of the corpus instead of random tokens
        corpus, _ = kjv_characters()
        starts = rng.integers(0, len(corpus) - profile.length, size=size)
        tokens = corpus[starts[:, None] + np.arange(profile.length)]
    for r, n in enumerate(spans):
        tokens[r, seconds[r]:seconds[r] + n] = tokens[r, firsts[r]:firsts[r] + n]
    return Batch(torch.from_numpy(tokens), firsts, seconds, spans)


def model_for(spec: RunSpec, profile: Profile) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(spec.seed)
    config = tf.LlamaConfig(vocab_size=profile.vocab, hidden_size=spec.width, intermediate_size=2 * spec.width,
                            num_hidden_layers=2, num_attention_heads=profile.heads,
                            num_key_value_heads=profile.heads, max_position_embeddings=profile.length,
                            bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = tf.LlamaForCausalLM(config)
    if not spec.mlp:
        for layer in model.model.layers:
            for param in layer.mlp.parameters():
                param.data.zero_()
                param.requires_grad_(False)
    return model


def markers(model: torch.nn.Module, probe: Batch) -> dict[str, float]:
    """Prefix-matching and previous-token score of every head, the in-context learning score and the loss."""
    model.eval()
    tokens = probe.tokens
    with torch.no_grad():
        out = model(tokens, labels=tokens, output_attentions=True)
        logits = out.logits[:, :-1]
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                                                   reduction="none").reshape(tokens.shape[0], -1)
    model.train()
    rows, queries, keys = probe.repeat_positions()
    # losses[r, t] is the loss of predicting token t + 1 at position t: the repeat's predictable tokens are
    # predicted at its queries, the first occurrence's same tokens one span earlier.
    earlier = queries - (probe.second - probe.first)[rows]
    row = {"loss": float(out.loss), "icl": float(losses[rows, queries].mean() - losses[rows, earlier].mean())}
    previous = torch.arange(1, tokens.shape[1])
    for layer, attention in enumerate(out.attentions):  # (batch, heads, query, key)
        prefix = attention[rows, :, queries, keys].mean(dim=0)
        prev = attention[:, :, previous, previous - 1].mean(dim=(0, 2))
        for head in range(len(prefix)):
            row[f"prefix_{layer}_{head}"] = float(prefix[head])
            row[f"prev_{layer}_{head}"] = float(prev[head])
    return row


def train_run(spec: RunSpec, profile: Profile, work: Path) -> pd.DataFrame:
    shutil.rmtree(work / spec.name, ignore_errors=True)  # a fresh run: no checkpoint of an earlier one is left
    model = model_for(spec, profile)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=profile.lr, weight_decay=0.01)
    rng = np.random.default_rng(1000 + spec.seed)
    probe = batch_of(np.random.default_rng(99), 128, profile)
    saved = set(profile.checkpoints())
    rows = []
    for step in range(profile.steps + 1):
        if step in saved:
            model.save_pretrained(work / spec.name / f"checkpoint-{step}")
            rows.append({"run": spec.name, "step": step, **markers(model, probe)})
        if step == profile.steps:
            break
        x = batch_of(rng, profile.batch, profile).tokens
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pd.DataFrame(rows)


def half_way(steps: pd.Series, score: pd.Series) -> float:
    """First step where ``score`` reaches half of its final value."""
    reached = steps[score >= 0.5 * score.iloc[-1]]
    return float(reached.iloc[0])


def classify(marks: pd.DataFrame, heads: int) -> pd.DataFrame:
    """Per (run, block, head): final prefix-matching and previous-token scores, class, and own transition step."""
    rows = []
    for run, mine in marks.groupby("run", sort=False):
        mine = mine.sort_values("step")
        for block in (0, 1):
            for head in range(heads):
                prefix, prev = mine[f"prefix_{block}_{head}"], mine[f"prev_{block}_{head}"]
                kind = ("induction" if block == 1 and prefix.iloc[-1] >= 0.2 else
                        "previous-token" if block == 0 and prev.iloc[-1] >= 0.3 else "other")
                own = {"induction": prefix, "previous-token": prev}.get(kind)
                rows.append({"run": run, "block": block, "head": head, "class": kind,
                             "final_prefix": float(prefix.iloc[-1]), "final_prev": float(prev.iloc[-1]),
                             "head_transition": half_way(mine["step"], own) if own is not None else float("nan")})
    return pd.DataFrame(rows)


def run_transition(marks: pd.DataFrame) -> float:
    """The first step where the run's best final head reaches half its final prefix-matching score (NaN: none)."""
    marks = marks.sort_values("step")
    columns = [c for c in marks.columns if c.startswith("prefix_")]
    best = str(marks.iloc[-1][columns].astype(float).idxmax())
    if marks.iloc[-1][best] < 0.2:
        return float("nan")
    return half_way(marks["step"], marks[best])


def measure_peers(specs: list[RunSpec], profile: Profile, work: Path) -> pd.DataFrame:
    """devinterp's LLC and WeightWatcher's alpha on the saved checkpoints, loaded as their users load them."""
    import transformers as tf

    rows = []
    data = batch_of(np.random.default_rng(7), 512, profile).tokens  # training-like batches
    llc_at = set(profile.llc_steps())
    for spec in specs:
        for step in profile.checkpoints():
            model = peers.load(work / spec.name / f"checkpoint-{step}", tf.LlamaForCausalLM)
            alpha = peers.weightwatcher_alpha(model, keep=spec.measured)
            attention = [a for name, a in alpha.alphas.items() if ".self_attn." in name]
            row = {"run": spec.name, "step": step, "alpha_mean": alpha.mean,
                   "alpha_attention": float(np.mean(attention)), "alpha_seconds": alpha.seconds}
            if step in llc_at:
                estimate = peers.local_learning_coefficient(model, data, profile.llc, trainable=spec.measured)
                row.update(llc=estimate.llc, llc_std=estimate.llc_std, llc_seconds=estimate.seconds)
            rows.append(row)
        print(f"peers measured on {spec.name}", flush=True)
    return pd.DataFrame(rows)


def run_level_changes(name: str, transition: float, window: float, marks: pd.DataFrame,
                      peer: pd.DataFrame, mean_np: pd.Series) -> dict[str, object]:
    """For each run-level series, its change points and the lag of the one nearest the transition."""
    series = {"loss": (marks["step"], marks["loss"]), "icl": (marks["step"], marks["icl"]),
              "mean_np": (mean_np.index.to_series(), mean_np),
              "alpha": (peer["step"], peer["alpha_attention"])}
    with_llc = peer.dropna(subset=["llc"])
    series["llc"] = (with_llc["step"], with_llc["llc"])
    row: dict[str, object] = {}
    for kind, (steps, values) in series.items():
        found = study.change_steps(steps.to_numpy(), values.to_numpy())
        row[f"{kind}_changes"] = " ".join(map(str, found))
        row[f"{kind}_lag"] = study.nearest(found, transition, window)
    return row


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = with_vocabulary(PROFILES[args.profile])
    out = args.out or Path(__file__).resolve().parent / "results" / args.profile
    work = out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    specs = [RunSpec(f"w{w}-attn-seed{s}", w, s, False) for w in profile.widths for s in profile.seeds]
    specs += [RunSpec(f"w{w}-mlp-seed0", w, 0, True) for w in profile.widths]

    marks_parts = []
    for spec in specs:  # each run's markers (and so its checkpoints) kept once written: a rerun resumes
        marks_parts.append(study.resumable(out / "runs" / f"{spec.name}-markers.csv", study.timed(
            lambda spec=spec: train_run(spec, profile, work), "train_seconds")))
        print(f"trained {spec.name} in {marks_parts[-1]['train_seconds'].iloc[0]:.0f} s", flush=True)
    marks = pd.concat(marks_parts, ignore_index=True)
    train_seconds = marks.groupby("run")["train_seconds"].first().to_dict()
    marks = marks.drop(columns="train_seconds")
    marks.to_csv(out / "markers.csv", index=False)
    peer = pd.concat([study.resumable(out / "runs" / f"{spec.name}-peers.csv",
                                      lambda spec=spec: measure_peers([spec], profile, work)) for spec in specs],
                     ignore_index=True)
    peer.to_csv(out / "peers.csv", index=False)

    from neural_persistence.training.early_stopping import first_stop

    measured = study.measure_np([work / s.name for s in specs], out / "np")
    table = measured.table
    heads = table[(table["head"] >= 0) & table["role"].isin(["q", "k", "v", "o"])]
    classes = classify(marks, profile.heads)
    transitions = {s.name: run_transition(marks[marks["run"] == s.name]) for s in specs}

    # Per head and role: each series kind's change point nearest the head's own transition (the run's for heads
    # of no class) and its move across that transition.
    changes = study.head_changes(heads).merge(classes, on=["run", "block", "head"])
    changes["transition"] = [r.head_transition if np.isfinite(r.head_transition) else transitions[r.run]
                             for r in changes.itertuples()]
    for kind in study.SERIES:
        changes[f"{kind}_lag"] = [study.nearest(c, t, profile.window)
                                  for c, t in zip(changes[f"{kind}_changes"], changes["transition"])]
    moves = study.transition_moves(heads, {r: t for r, t in transitions.items()}, profile.window)
    per_head = changes.merge(moves, on=study.KEY, how="left")
    per_head.assign(**{f"{k}_changes": per_head[f"{k}_changes"].map(lambda c: " ".join(map(str, c)))
                       for k in study.SERIES}).to_csv(out / "heads.csv", index=False)

    run_rows = []
    for spec in specs:
        mine = marks[marks["run"] == spec.name].sort_values("step")
        roles = ["q", "k", "v", "o"] + (["mlp_up", "mlp_gate", "mlp_down"] if spec.mlp else [])
        whole = table[(table["run"] == spec.name) & (table["head"] < 0) & table["role"].isin(roles)]
        mean_np = whole.groupby("step")["normalized_np"].mean()
        stop = first_stop(mean_np.to_numpy(), patience=3, min_delta=1e-3)
        mine_classes = classes[classes["run"] == spec.name]["class"].value_counts()
        peer_mine = peer[peer["run"] == spec.name]
        run_rows.append({"run": spec.name, "width": spec.width, "seed": spec.seed, "mlp": spec.mlp,
                         "transition": transitions[spec.name],
                         "induction_heads": int(mine_classes.get("induction", 0)),
                         "previous_token_heads": int(mine_classes.get("previous-token", 0)),
                         "final_icl": float(mine["icl"].iloc[-1]), "final_loss": float(mine["loss"].iloc[-1]),
                         **run_level_changes(spec.name, transitions[spec.name], profile.window, mine, peer_mine,
                                             mean_np),
                         "np_stop": float(mean_np.index[stop]) if stop is not None else float("nan"),
                         "train_seconds": round(train_seconds[spec.name], 1),
                         "np_seconds_per_checkpoint": measured.seconds / measured.checkpoints,
                         "llc_seconds_per_checkpoint": float(peer_mine["llc_seconds"].mean()),
                         "alpha_seconds_per_checkpoint": float(peer_mine["alpha_seconds"].mean())})
    runs = pd.DataFrame(run_rows)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarize(per_head)
    summary.to_csv(out / "summary.csv", index=False)
    plot(marks, table, peer, runs, classes, out / "induction.png")
    print(runs.to_string(index=False))
    print(summary.to_string(index=False))
    return runs


def summarize(per_head: pd.DataFrame) -> pd.DataFrame:
    """Per configuration (width, attention-only or not), role and series kind: how often each head class has a
    change point at its transition, the median lag, and the AUROC of the signed move across the transition (induction
    heads against the other heads of layer 1; previous-token heads against the other heads of layer 0)."""
    frame = per_head.assign(config=per_head["run"].str.replace(r"-seed\d+$", "", regex=True))
    rows = []
    for (config, role), group in frame.groupby(["config", "role"]):
        for kind in study.SERIES:
            row = {"config": config, "role": role, "series": kind}
            for cls in ("induction", "previous-token", "other"):
                mine = group[group["class"] == cls]
                row[f"{cls}_heads"] = len(mine)
                row[f"{cls}_at_transition"] = float(mine[f"{kind}_lag"].notna().mean()) if len(mine) else np.nan
                row[f"{cls}_median_lag"] = float(mine[f"{kind}_lag"].median()) if len(mine) else np.nan
            for block, cls in ((1, "induction"), (0, "previous-token")):
                layer = group[group["block"] == block]
                row[f"auroc_{cls}"] = study.auroc(layer[f"{kind}_move"].to_numpy(),
                                                  (layer["class"] == cls).to_numpy())
            rows.append(row)
    return pd.DataFrame(rows)


def plot(marks: pd.DataFrame, table: pd.DataFrame, peer: pd.DataFrame, runs: pd.DataFrame,
         classes: pd.DataFrame, path: Path) -> None:
    """Per run (first seed of each configuration): the markers, per-head NP of k coloured by head class, its
    rms, the peers' signals, with the transition dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(runs.drop_duplicates(subset=["width", "mlp"])["run"])
    colours = {"induction": "tab:red", "previous-token": "tab:blue", "other": "0.6"}
    fig, axes = plt.subplots(5, len(shown), figsize=(3.8 * len(shown), 11), squeeze=False, sharex="col")
    for i, name in enumerate(shown):
        mine = marks[marks["run"] == name]
        kind_of = classes[classes["run"] == name].set_index(["block", "head"])["class"]
        for column in [c for c in mine.columns if c.startswith("prefix_1_")]:
            axes[0][i].plot(mine["step"], mine[column], lw=0.8)
        axes[0][i].set_title(name, fontsize=9)
        heads = table[(table["run"] == name) & (table["head"] >= 0) & (table["role"] == "k")]
        for (block, head), part in heads.groupby(["block", "head"]):
            part = part.sort_values("step")
            colour = colours[kind_of.loc[(block, head)]]
            axes[1][i].plot(part["step"], part["normalized_np"], lw=0.7, color=colour)
            axes[2][i].plot(part["step"], part["structural"], lw=0.7, color=colour)
            axes[3][i].plot(part["step"], part["rms"], lw=0.7, color=colour)
        peer_mine = peer[peer["run"] == name]
        axes[4][i].plot(peer_mine["step"], peer_mine["alpha_attention"], color="tab:green", lw=0.9)
        twin = axes[4][i].twinx()
        with_llc = peer_mine.dropna(subset=["llc"])
        twin.plot(with_llc["step"], with_llc["llc"], color="tab:purple", lw=0.9)
        if i == len(shown) - 1:
            twin.set_ylabel("LLC (purple)")
        axes[4][i].set_xlabel("step")
        step = runs.set_index("run").loc[name, "transition"]
        for ax in axes[:, i]:
            ax.set_xscale("symlog", linthresh=50)
            if np.isfinite(step):
                ax.axvline(step, color="k", ls="--", lw=0.8)
    for row, label in enumerate(["prefix-matching\n(layer 1 heads)", "per-head NP of k", "structural NP of k\n"
                                 "(NP - null)", "rms of k", "WeightWatcher alpha\n(attention, green)"]):
        axes[row][0].set_ylabel(label, fontsize=9)
    fig.suptitle("Induction heads: red induction, blue previous-token, grey other heads; dashed: the transition",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1:])
