#!/usr/bin/env bash
# Table 1 of arXiv 2404.03715 as one Hydra multirun: one run (and W&B run) per row, one W&B group;
# then dno-tables writes the tables and plots of the sweep.
#
#   experiments/table1.sh                                   # the offline default (SmolLM2-135M, rules oracle)
#   experiments/table1.sh model=mistral_7b_instruct data=ultrafeedback schedule=paper
#
# Extra arguments are Hydra overrides applied to every row. SWEEP_DIR sets the sweep directory,
# TABLES_DIR where the tables go (default: SWEEP_DIR/tables).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=table1_sft_positives,table1_offline_dpo,table1_spin,table1_dno_restrictive,table1_dno_lookahead,table1_dno,table1_dno_eq8
SWEEP="${SWEEP_DIR:-multirun/table1/$(date +%Y-%m-%d_%H-%M-%S)}"
.venv/bin/dno-run -m "experiment=$ROWS" "hydra.sweep.dir=$SWEEP" "$@"
# TABLES_ARGS: extra dno-tables overrides (e.g. bootstrap.lc_samples=100 compare_to=SPIN)
.venv/bin/dno-tables "runs=$SWEEP" "out=${TABLES_DIR:-$SWEEP/tables}" ${TABLES_ARGS:-}
