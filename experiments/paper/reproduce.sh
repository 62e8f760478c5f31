#!/usr/bin/env bash
# The runs behind REPRODUCTION.md. exp1, exp3, exp4 and exp5 run the paper's protocol; exp2 the paper's 40 epochs with
# 36 of its 50 runs so far (the exp2 line below resumes towards 50, about 2 hours more on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-../.venv/bin/python}
$PY -m paper.exp1_trained_vs_random --profile paper
$PY -m paper.exp2_best_practices --profile paper --runs 3 --epochs 15
# exp2 saves after every run and, started again, trains only the missing runs: rerun this line to add runs
# (--jobs 2: two runs at once, one per core).
$PY -m paper.exp2_best_practices --profile paper --runs 50 --epochs 40 --out paper/results/exp2-paper-40epochs --jobs 2
$PY -m paper.exp3_early_stopping --profile paper
$PY -m paper.exp4_scarcity_and_noise --profile paper
$PY -m paper.exp5_controls --profile paper
