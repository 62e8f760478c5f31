"""A second known transition: grokking of modular addition (Power et al. 2022; Nanda et al. 2023, "Progress measures
for grokking via mechanistic interpretability").

One-layer Llama-architecture transformers (transformers' ``LlamaForCausalLM``, 4 heads, saved with
``save_pretrained``) read ``a b =`` and predict ``(a + b) mod p`` (p = 59), trained full batch with AdamW and strong
weight decay on 30 % of the pairs. Such a model first *memorizes* (training accuracy reaches 1 within a few hundred
steps while test accuracy stays low) and only much later *generalizes*: test accuracy climbs to 1 as a Fourier
circuit forms and the memorizing weights are cleaned up by weight decay (Nanda et al.). Checkpoints every 100 steps.

Measured at every checkpoint, without NP (``markers.csv``): training and test accuracy and loss, and the share of
the token embedding's power in its 6 strongest Fourier frequencies over the residue axis (Nanda et al.'s sign of the
circuit; about 6/29 for a random embedding, near 1 once the model uses a few frequencies). Marked steps:

* **memorization**: the first checkpoint with training accuracy >= 0.99;
* **grokking**: the first checkpoint where test accuracy has covered half the way from its value at memorization
  to its final value.

Then, on the same folders: ``neural-persistence analyze --per-head --null 8 --baselines`` as a user runs it (each
head's q/k/v/o and the MLP maps: NP, null, structural NP - null, rms; change points nearest each marked step);
NP's stopping rule on mean normalized NP (where does a rule without validation data stop: at memorization, or after
grokking?); devinterp's local learning coefficient on the training pairs (every 200 steps) and WeightWatcher's
alpha (every checkpoint), timed.

Writes ``markers.csv``, ``peers.csv``, ``series.csv``, ``runs.csv`` and ``grokking.png`` under ``--out``; the full
profile's tables are in ``experiments/results/DYNAMICS.md``.

Run: ``python experiments/dynamics/grokking.py --profile quick|full [--out DIR]``.
"""

from __future__ import annotations

import argparse
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
    p: int
    train_fraction: float
    width: int
    steps: int
    every: int
    llc_every: int
    seeds: tuple[int, ...]
    weight_decay: float = 1.0
    window: int = 200  # steps either side of a marked step that count as "at" it
    llc: peers.LLCSettings = field(default_factory=peers.LLCSettings)

    def checkpoints(self) -> list[int]:
        return list(range(0, self.steps + 1, self.every))


PROFILES = {
    "quick": Profile(p=23, train_fraction=0.5, width=32, steps=60, every=6, llc_every=1000, seeds=(0,), window=12,
                     llc=peers.LLCSettings(chains=1, draws=10)),
    "full": Profile(p=59, train_fraction=0.3, width=64, steps=4000, every=100, llc_every=200, seeds=(0, 1, 2),
                    llc=peers.LLCSettings(chains=2, draws=60, batch_size=128)),
}


@dataclass(frozen=True)
class Data:
    """All pairs as ``a b = c`` rows; the first ``train`` of a seeded permutation are the training pairs."""

    tokens: torch.Tensor  # (p * p, 4)
    train: torch.Tensor  # indices
    test: torch.Tensor


def data_for(profile: Profile, seed: int) -> Data:
    p = profile.p
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    rows = np.stack([a.ravel(), b.ravel(), np.full(p * p, p), (a.ravel() + b.ravel()) % p], axis=1)
    order = np.random.default_rng(seed).permutation(p * p)
    cut = int(profile.train_fraction * p * p)
    return Data(torch.from_numpy(rows), torch.from_numpy(order[:cut]), torch.from_numpy(order[cut:]))


def model_for(profile: Profile, seed: int) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(seed)
    config = tf.LlamaConfig(vocab_size=profile.p + 1, hidden_size=profile.width, intermediate_size=4 * profile.width,
                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                            max_position_embeddings=4, tie_word_embeddings=False, bos_token_id=profile.p,
                            eos_token_id=profile.p)
    return tf.LlamaForCausalLM(config)


def answer_loss(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Per-row loss of the answer (the 4th token) predicted at ``=``, repeated over the row's 3 positions: devinterp
    wants a loss per next-token position, and the mean over them is then the answer's loss."""
    logits = model(tokens[:, :3], use_cache=False).logits[:, -1]
    loss = torch.nn.functional.cross_entropy(logits, tokens[:, 3], reduction="none")
    return loss[:, None].expand(-1, tokens.shape[1] - 1)


def fourier_share(model: torch.nn.Module, p: int, top: int = 6) -> float:
    """Share of the residue embeddings' power (mean removed) in their ``top`` strongest frequencies."""
    embedding = model.get_input_embeddings().weight.detach()[:p].double().numpy()
    spectrum = np.abs(np.fft.rfft(embedding - embedding.mean(axis=0), axis=0)) ** 2
    power = spectrum[1:].sum(axis=1)  # per frequency 1 .. p // 2
    return float(np.sort(power)[-top:].sum() / power.sum())


def markers(model: torch.nn.Module, data: Data, p: int) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(data.tokens[:, :3], use_cache=False).logits[:, -1]
        losses = torch.nn.functional.cross_entropy(logits, data.tokens[:, 3], reduction="none")
        right = (logits.argmax(-1) == data.tokens[:, 3]).double()
    model.train()
    return {"train_acc": float(right[data.train].mean()), "test_acc": float(right[data.test].mean()),
            "train_loss": float(losses[data.train].mean()), "test_loss": float(losses[data.test].mean()),
            "fourier_share": fourier_share(model, p)}


def train_run(name: str, seed: int, profile: Profile, work: Path) -> pd.DataFrame:
    shutil.rmtree(work / name, ignore_errors=True)  # a fresh run: no checkpoint of an earlier one is left
    data = data_for(profile, seed)
    model = model_for(profile, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=profile.weight_decay, betas=(0.9, 0.98))
    train = data.tokens[data.train]
    saved = set(profile.checkpoints())
    rows = []
    for step in range(profile.steps + 1):
        if step in saved:
            model.save_pretrained(work / name / f"checkpoint-{step}")
            rows.append({"run": name, "step": step, **markers(model, data, profile.p)})
        if step == profile.steps:
            break
        loss = answer_loss(model, train)[:, 0].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Marked:
    memorization: float
    grokking: float


def marked_steps(marks: pd.DataFrame) -> Marked:
    marks = marks.sort_values("step")
    memorized = marks[marks["train_acc"] >= 0.99]
    if not len(memorized):
        return Marked(float("nan"), float("nan"))
    at = memorized.iloc[0]
    goal = 0.5 * (at["test_acc"] + marks["test_acc"].iloc[-1])
    later = marks[(marks["step"] >= at["step"]) & (marks["test_acc"] >= goal)]
    grokked = float(later["step"].iloc[0]) if len(later) and marks["test_acc"].iloc[-1] > 0.9 else float("nan")
    return Marked(float(at["step"]), grokked)


def measure_peers(names: list[str], profile: Profile, work: Path, seeds: list[int]) -> pd.DataFrame:
    import transformers as tf

    rows = []
    for name, seed in zip(names, seeds):
        data = data_for(profile, seed)
        train = data.tokens[data.train]
        for step in profile.checkpoints():
            model = peers.load(work / name / f"checkpoint-{step}", tf.LlamaForCausalLM)
            alpha = peers.weightwatcher_alpha(model)
            row = {"run": name, "step": step, "alpha_mean": alpha.mean, "alpha_seconds": alpha.seconds}
            if step % profile.llc_every == 0:
                estimate = peers.local_learning_coefficient(model, train, profile.llc, loss_fn=answer_loss)
                row.update(llc=estimate.llc, llc_std=estimate.llc_std, llc_seconds=estimate.seconds)
            rows.append(row)
        print(f"peers measured on {name}", flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    out = args.out or Path(__file__).resolve().parent / "results" / f"grokking-{args.profile}"
    work = out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)
    names = [f"p{profile.p}-seed{s}" for s in profile.seeds]

    parts = []
    for name, seed in zip(names, profile.seeds):  # each run kept once written: a rerun resumes
        parts.append(study.resumable(out / "runs" / f"{name}-markers.csv", study.timed(
            lambda name=name, seed=seed: train_run(name, seed, profile, work), "train_seconds")))
        print(f"trained {name} in {parts[-1]['train_seconds'].iloc[0]:.0f} s", flush=True)
    marks = pd.concat(parts, ignore_index=True)
    train_seconds = marks.groupby("run")["train_seconds"].first().to_dict()
    marks = marks.drop(columns="train_seconds")
    marks.to_csv(out / "markers.csv", index=False)
    peer = pd.concat([study.resumable(out / "runs" / f"{name}-peers.csv",
                                      lambda name=name, seed=seed: measure_peers([name], profile, work, [seed]))
                      for name, seed in zip(names, profile.seeds)], ignore_index=True)
    peer.to_csv(out / "peers.csv", index=False)

    from neural_persistence.training.early_stopping import first_stop

    measured = study.measure_np([work / n for n in names], out / "np")
    table = measured.table
    attention = table[(table["head"] >= 0) & table["role"].isin(["q", "k", "v", "o"])]
    mlp = table[(table["head"] < 0) & table["role"].isin(["mlp_up", "mlp_gate", "mlp_down"])]
    matrices = pd.concat([attention, mlp], ignore_index=True)
    marked = {n: marked_steps(marks[marks["run"] == n]) for n in names}
    series = study.head_changes(matrices)
    for event in ("memorization", "grokking"):
        for kind in study.SERIES:
            series[f"{kind}_lag_{event}"] = [study.nearest(c, getattr(marked[r], event), profile.window)
                                             for c, r in zip(series[f"{kind}_changes"], series["run"])]
    series.assign(**{f"{k}_changes": series[f"{k}_changes"].map(lambda c: " ".join(map(str, c)))
                     for k in study.SERIES}).to_csv(out / "series.csv", index=False)

    run_rows = []
    for name in names:
        mine = marks[marks["run"] == name].sort_values("step")
        whole = table[(table["run"] == name) & (table["head"] < 0) & (table["role"] != "embedding")
                      & (table["role"] != "lm_head")]
        mean_np = whole.groupby("step")["normalized_np"].mean()
        mean_rms = whole.groupby("step")["rms"].mean()
        stop = first_stop(mean_np.to_numpy(), patience=3, min_delta=1e-3)
        peer_mine = peer[peer["run"] == name]
        with_llc = peer_mine.dropna(subset=["llc"])
        row: dict[str, object] = {"run": name, "memorization": marked[name].memorization,
                                  "grokking": marked[name].grokking,
                                  "final_test_acc": float(mine["test_acc"].iloc[-1])}
        run_series = {"test_acc": (mine["step"], mine["test_acc"]), "fourier": (mine["step"], mine["fourier_share"]),
                      "mean_np": (mean_np.index.to_series(), mean_np),
                      "mean_rms": (mean_rms.index.to_series(), mean_rms),
                      "alpha": (peer_mine["step"], peer_mine["alpha_mean"]),
                      "llc": (with_llc["step"], with_llc["llc"])}
        for kind, (steps, values) in run_series.items():
            found = study.change_steps(steps.to_numpy(), values.to_numpy())
            row[f"{kind}_changes"] = " ".join(map(str, found))
            row[f"{kind}_lag_grokking"] = study.nearest(found, marked[name].grokking, profile.window)
        row["r_np_rms"] = float(np.corrcoef(mean_np.to_numpy(), mean_rms.to_numpy())[0, 1])
        row.update(np_stop=float(mean_np.index[stop]) if stop is not None else float("nan"),
                   train_seconds=round(train_seconds[name], 1),
                   np_seconds_per_checkpoint=measured.seconds / measured.checkpoints,
                   llc_seconds_per_checkpoint=float(peer_mine["llc_seconds"].mean()),
                   alpha_seconds_per_checkpoint=float(peer_mine["alpha_seconds"].mean()))
        run_rows.append(row)
    runs = pd.DataFrame(run_rows)
    runs.to_csv(out / "runs.csv", index=False)
    summary = summarize(series)
    summary.to_csv(out / "summary.csv", index=False)
    plot(marks, table, peer, runs, out / "grokking.png")
    print(runs.to_string(index=False))
    print(summary.to_string(index=False))
    return runs


def summarize(series: pd.DataFrame) -> pd.DataFrame:
    """Per role and series kind: the share of matrices with a change point at memorization and at grokking, and
    the median lag of those at grokking."""
    rows = []
    for role, group in series.groupby("role"):
        for kind in study.SERIES:
            rows.append({"role": role, "series": kind, "matrices": len(group),
                         "at_memorization": float(group[f"{kind}_lag_memorization"].notna().mean()),
                         "at_grokking": float(group[f"{kind}_lag_grokking"].notna().mean()),
                         "median_lag_grokking": float(group[f"{kind}_lag_grokking"].median())})
    return pd.DataFrame(rows)


def plot(marks: pd.DataFrame, table: pd.DataFrame, peer: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    """Per run: accuracies and the Fourier share; per-role mean NP, structural NP and rms; alpha and LLC; the
    memorization (dotted) and grokking (dashed) steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs["run"])
    fig, axes = plt.subplots(5, len(names), figsize=(3.8 * len(names), 11), squeeze=False, sharex=True)
    for i, name in enumerate(names):
        mine = marks[marks["run"] == name]
        for column, colour in (("train_acc", "tab:blue"), ("test_acc", "tab:red"), ("fourier_share", "0.4")):
            axes[0][i].plot(mine["step"], mine[column], color=colour, lw=0.9, label=column)
        axes[0][i].set_title(name, fontsize=9)
        whole = table[(table["run"] == name) & (table["head"] < 0)]
        for role, part in whole.groupby("role"):
            part = part.groupby("step")[["normalized_np", "structural", "rms"]].mean()
            for row, column in ((1, "normalized_np"), (2, "structural"), (3, "rms")):
                axes[row][i].plot(part.index, part[column], lw=0.8, label=role)
        peer_mine = peer[peer["run"] == name]
        axes[4][i].plot(peer_mine["step"], peer_mine["alpha_mean"], color="tab:green", lw=0.9)
        twin = axes[4][i].twinx()
        with_llc = peer_mine.dropna(subset=["llc"])
        twin.plot(with_llc["step"], with_llc["llc"], color="tab:purple", lw=0.9)
        axes[4][i].set_xlabel("step")
        marked = runs.set_index("run").loc[name]
        for ax in axes[:, i]:
            for step, style in ((marked["memorization"], ":"), (marked["grokking"], "--")):
                if np.isfinite(step):
                    ax.axvline(step, color="k", ls=style, lw=0.8)
    axes[0][0].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    for row, label in enumerate(["accuracy (train blue, test red)\nFourier share (grey)", "normalized NP (per role)",
                                 "structural NP (NP - null)", "rms", "WeightWatcher alpha (green)\nLLC (purple)"]):
        axes[row][0].set_ylabel(label, fontsize=9)
    fig.suptitle("Grokking of modular addition: dotted memorization, dashed grokking", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main(sys.argv[1:])
