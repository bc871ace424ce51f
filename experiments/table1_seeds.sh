#!/usr/bin/env bash
# Table 1's rows that the paper orders (DNO, DNO-Restrictive, SPIN, Offline DPO) with three seeds each on
# the offline default, 200 test prompts: one Hydra multirun, then dno-tables' comparison over seeds.
#
#   experiments/table1_seeds.sh                        # 12 runs of the demo schedule: ~2 h on 2 CPU cores
#   ROWS=table1_dno,table1_spin SEEDS=0,1 experiments/table1_seeds.sh model=tiny_random schedule=smoke
#
# SWEEP_DIR: the sweep (default multirun/table1_seeds/<time>); SWEEP_NAME: its W&B group (default table1_seeds);
# TABLES_DIR: its tables and plots (default results/table1_seeds); REPORT: where comparison.md is copied (default
# results/table1_seeds.md). Then the runs' records (what dno-tables and dno-report read: config, metrics, summary,
# provenance, W&B id, final annotations; RECORDS_DIR, default $TABLES_DIR/runs) are copied out of the sweep, small
# enough to commit, and the sweep's W&B report is built from them (dno-report; offline: report.json, the spec W&B
# would get, in $TABLES_DIR/report). Then the evaluation-only noise: the first row's first seed's final model (its
# best iterate) answers the same test prompts with the sampling seeds EVAL_SEEDS (default 0,1,2; empty: skip), one
# dno-eval multirun, and its win-rates are appended to the report.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-table1_dno,table1_dno_restrictive,table1_spin,table1_offline_dpo}"
SEEDS="${SEEDS:-0,1,2}"
SWEEP="${SWEEP_DIR:-multirun/table1_seeds/$(date +%Y-%m-%d_%H-%M-%S)}"
TABLES="${TABLES_DIR:-results/table1_seeds}"
start=$(date +%s)
# seeds outermost (Hydra's sweep varies the last key fastest): a sweep cut short still has every row
.venv/bin/dno-run -m "seed=$SEEDS" "experiment=$ROWS" schedule.test_prompts=200 "hydra.sweep.dir=$SWEEP" \
  "sweep_name=${SWEEP_NAME:-table1_seeds}" "$@"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee "$SWEEP/wall_time.txt"
.venv/bin/dno-tables "runs=$SWEEP" "out=$TABLES" ${TABLES_ARGS:-}
REPORT="${REPORT:-results/table1_seeds.md}"
cp "$TABLES/comparison.md" "$REPORT"
RECORDS="${RECORDS_DIR:-$TABLES/runs}"
experiments/run_records.sh "$SWEEP" "$RECORDS"
.venv/bin/dno-report "runs=$RECORDS" "title='DNO: Table 1 with three seeds (${SWEEP_NAME:-table1_seeds})'" \
  "hydra.run.dir=$TABLES/report"

EVAL_SEEDS="${EVAL_SEEDS-0,1,2}"
[ -n "$EVAL_SEEDS" ] || exit 0
ROW="${ROWS%%,*}"
RUN=$(grep -l -x -- "- seed=${SEEDS%%,*}" $(grep -l -x -- "- experiment=$ROW" "$SWEEP"/*/.hydra/overrides.yaml) | head -1)
RUN=$(dirname "$(dirname "$RUN")")
BEST=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["final/best_iteration"])' "$RUN/summary.json")
CKPT="$RUN/iter_$BEST/checkpoint"
[ "$BEST" != 0 ] || CKPT=null  # pi_1 was the best: the model itself
start=$(date +%s)
.venv/bin/dno-eval -m "experiment=$ROW" "checkpoint=$CKPT" "seed=$EVAL_SEEDS" \
  schedule.test_prompts=200 "hydra.sweep.dir=$SWEEP/eval_noise" "$@"
echo "evaluation-only wall time: $(( $(date +%s) - start )) s" | tee "$SWEEP/eval_noise/wall_time.txt"
.venv/bin/python -c 'import sys; from dno.reports.comparison import eval_noise; print(eval_noise(*sys.argv[1:]), end="")' \
  "$SWEEP/eval_noise" "$CKPT" >> "$REPORT"
