#!/usr/bin/env bash
# The runs behind REPRODUCTION.md. exp1 runs the paper's full protocol; the others run a reduced one (fewer runs
# and epochs than the paper, which would take days on 2 CPU cores), as named in each command.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-../.venv/bin/python}
$PY -m paper.exp1_trained_vs_random --profile paper
$PY -m paper.exp2_best_practices --profile paper --runs 3 --epochs 15
$PY -m paper.exp2_best_practices --profile paper --runs 2 --epochs 40 --out paper/results/exp2-paper-40epochs
$PY -m paper.exp3_early_stopping --profile paper
$PY -m paper.exp4_scarcity_and_noise --profile paper
$PY -m paper.exp5_controls --profile paper --runs 5 --epochs 5
