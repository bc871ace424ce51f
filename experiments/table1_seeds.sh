#!/usr/bin/env bash
# Table 1's rows that the paper orders (DNO, DNO-Restrictive, SPIN, Offline DPO) with three seeds each on
# the offline default, 200 test prompts: one Hydra multirun, then dno-tables' comparison over seeds.
#
#   experiments/table1_seeds.sh                        # 12 runs of the demo schedule: ~2 h on 2 CPU cores
#   ROWS=table1_dno,table1_spin SEEDS=0,1 experiments/table1_seeds.sh model=tiny_random schedule=smoke
#
# SWEEP_DIR: the sweep (default multirun/table1_seeds/<time>); TABLES_DIR: its tables and plots (default
# results/table1_seeds); REPORT: where comparison.md is copied (default results/table1_seeds.md).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-table1_dno,table1_dno_restrictive,table1_spin,table1_offline_dpo}"
SEEDS="${SEEDS:-0,1,2}"
SWEEP="${SWEEP_DIR:-multirun/table1_seeds/$(date +%Y-%m-%d_%H-%M-%S)}"
TABLES="${TABLES_DIR:-results/table1_seeds}"
start=$(date +%s)
.venv/bin/dno-run -m "experiment=$ROWS" "seed=$SEEDS" schedule.test_prompts=200 "hydra.sweep.dir=$SWEEP" "$@"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee "$SWEEP/wall_time.txt"
.venv/bin/dno-tables "runs=$SWEEP" "out=$TABLES" ${TABLES_ARGS:-}
cp "$TABLES/comparison.md" "${REPORT:-results/table1_seeds.md}"
