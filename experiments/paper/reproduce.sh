#!/usr/bin/env bash
# The runs behind REPRODUCTION.md: every experiment runs the paper's protocol (exp2: 40 epochs, 50 runs per variant,
# about 10 hours on 2 CPU cores with --jobs 2), plus an earlier short version of exp2.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-../.venv/bin/python}
$PY -m paper.exp1_trained_vs_random --profile paper
$PY -m paper.exp2_best_practices --profile paper --runs 3 --epochs 15
# exp2 saves after every run and, started again, trains only the missing runs: rerun this line to add runs
# (--jobs 2: two runs at once, one per core).
$PY -m paper.exp2_best_practices --profile paper --runs 50 --epochs 40 --out paper/results/exp2-paper-40epochs --jobs 2
$PY -m paper.exp2_permutation --profile paper   # Girrbach et al.'s permutation analysis (section 2c)
$PY -m paper.exp3_early_stopping --profile paper
$PY -m paper.exp4_scarcity_and_noise --profile paper
$PY -m paper.exp5_controls --profile paper
