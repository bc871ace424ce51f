#!/usr/bin/env bash
# Exact checks of DNO's theory on the bundled tabular games (experiments/nash/*.csv): every method
# on every problem, Eq. 8's regression error against the number of pairs, then the report with plots.
#
#   experiments/nash.sh                      # writes results/nash/ and results/nash.md (about a minute)
#
# NASH_DIR (default results/nash), REPORT (default results/nash.md) and ITERATIONS (default 2000)
# change where and how much.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${NASH_DIR:-results/nash}"
rm -rf "$OUT"
.venv/bin/dno-nash -m preference=rock_paper_scissors,weighted_cycle,transitive,random_8x8 \
  method=dno_exact,dno,dno_prct,sppo,bt_reward iterations="${ITERATIONS:-2000}" eta=1 init=random seed=0 \
  "hydra.sweep.dir=$OUT"
.venv/bin/dno-nash -m preference=rock_paper_scissors,weighted_cycle,transitive,random_8x8 \
  method=dno,dno_prct,sppo explore=0.1 iterations="${ITERATIONS:-2000}" eta=1 init=random seed=0 \
  "hydra.sweep.dir=$OUT" 'hydra.sweep.subdir=${preference}/${method}_explore'
.venv/bin/dno-nash -m preference=random_8x8 method=dno iterations=10 eta=1 pairs=30,300,3000,30000 \
  "hydra.sweep.dir=$OUT/regression" 'hydra.sweep.subdir=pairs_${pairs}'
.venv/bin/python -m dno.nash.report "$OUT" "${REPORT:-results/nash.md}"
