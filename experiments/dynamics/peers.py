"""The tools researchers use today, run on the same saved checkpoints as NP: devinterp's local learning coefficient
and WeightWatcher's per-layer alpha.

Both are measured here from the folder ``save_pretrained`` wrote, as a user of those tools would load it, and
timed. What each needs differs and is the point of running them beside NP: the LLC needs data and gradients (SGLD
chains over a training-like batch; Lau et al. 2023, Hoogland et al. 2024 found the stages of small attention-only
language models with it); alpha, like NP, needs the weights alone (the power-law exponent of each layer's
eigenvalue spectrum; Martin & Mahoney 2021).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # devinterp draws a progress bar per chain


@dataclass(frozen=True)
class LLCSettings:
    """SGLD settings of the LLC estimate (devinterp's own example values, chains and draws cut to fit CPU minutes)."""

    lr: float = 1e-3
    n_beta: float = 30.0
    localization: float = 100.0
    chains: int = 2
    draws: int = 100
    batch_size: int = 32


@dataclass(frozen=True)
class LLCEstimate:
    llc: float
    llc_std: float  # over chains
    seconds: float


def local_learning_coefficient(model: torch.nn.Module, input_ids: torch.Tensor, settings: LLCSettings,
                               trainable: Callable[[str], bool] | None = None,
                               loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
                               seed: int = 100) -> LLCEstimate:
    """devinterp's LLC of ``model`` at its weights, sampling only the parameters ``trainable`` names (all by default).

    ``loss_fn(model, input_ids) -> (batch, positions)`` per-token losses (devinterp's next-token cross entropy by
    default).
    """
    from datasets import Dataset
    from devinterp.slt.llc import llc

    data = Dataset.from_dict({"input_ids": input_ids.tolist()}).with_format("torch")
    masks = None
    if trainable is not None:
        masks = {name: None for name, _ in model.named_parameters() if trainable(name)}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = llc(model, data, {}, lr=settings.lr, n_beta=settings.n_beta, localization=settings.localization,
                     num_chains=settings.chains, num_draws=settings.draws, batch_size=settings.batch_size,
                     num_init_loss_batches=4, param_masks=masks, loss_fn=loss_fn, init_seed=seed, device="cpu")
    return LLCEstimate(llc=float(result["llc_mean"]), llc_std=float(result["llc_std"]),
                       seconds=time.perf_counter() - start)


@dataclass(frozen=True)
class AlphaEstimate:
    alphas: dict[str, float]  # layer name -> WeightWatcher's alpha
    seconds: float

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.alphas.values()))) if self.alphas else float("nan")


def weightwatcher_alpha(model: torch.nn.Module, keep: Callable[[str], bool] | None = None) -> AlphaEstimate:
    """WeightWatcher's alpha of every layer it analyzes (``min_evals=8``: the models here are small), keyed by the
    layer's module name; layers ``keep`` rejects (e.g. frozen all-zero maps, whose spectrum is empty) left out."""
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = ww.WeightWatcher(model=model).analyze(min_evals=8)
    seconds = time.perf_counter() - start
    # WeightWatcher numbers layers in model.modules() order; map its ids back to module names.
    ordered = [name for name, _ in model.named_modules()]
    alphas = {}
    for row in frame.itertuples():
        name = ordered[int(row.layer_id)] if int(row.layer_id) < len(ordered) else str(row.name)
        if (keep is None or keep(name)) and np.isfinite(row.alpha):
            alphas[name] = float(row.alpha)
    return AlphaEstimate(alphas=alphas, seconds=seconds)


def load(folder: Path, cls: type) -> torch.nn.Module:
    """The checkpoint as its user loads it (``from_pretrained``), in evaluation mode."""
    model = cls.from_pretrained(folder)
    model.eval()
    return model
