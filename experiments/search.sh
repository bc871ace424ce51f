#!/usr/bin/env bash
# Issue 44's search: Optuna over DNO-Prct's knobs (conf/search/dno.yaml: eta, the learning rate, the pair rule's
# margin, K, the replay shares) on the offline default, each trial chosen on the validation prompts; then the best
# trial's point and the default, each with fresh seeds on the test prompts, compared with 95% intervals.
#
#   experiments/search.sh                       # 12 trials + 2 x 3 runs of the demo schedule: ~3 h on 2 CPU cores
#   TRIALS=2 SEEDS=1 TEST_PROMPTS=8 experiments/search.sh model=tiny_random schedule=smoke schedule.iterations=1
#
# TRIALS (default 12) trials of seed 0, trial 0 the default itself (search=dno enqueues it); SEEDS (default 1,2,3),
# the fresh seeds of both points, TEST_PROMPTS (default 200) their test prompts. SWEEP_DIR (default multirun/search):
# the trials in trials/ (the study: trials/study.db), the points in best/ and default/; OUT (default results/search):
# the runs' records (trials/ with the study, compared/), dno-tables' comparison (tables/), dno-report's spec
# (report/); REPORT (default results/search.md). The same command resumes after a kill: the study runs only the
# trials still missing, and each run resumes its finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
TRIALS="${TRIALS:-12}"
SEEDS="${SEEDS:-1,2,3}"
SWEEP="${SWEEP_DIR:-multirun/search}"
OUT="${OUT:-results/search}"
REPORT="${REPORT:-results/search.md}"
# Each phase's wall time, a line per start of this script, also when a start is stopped (SIGTERM, Ctrl-C; a
# kill -9 loses its start's line): the report sums the lines.
WALL_FILE=""
timed() { WALL_FILE="$1"; start=$(date +%s); }
record() { [ -z "$WALL_FILE" ] || { mkdir -p "$(dirname "$WALL_FILE")"; echo "$(( $(date +%s) - start ))" >> "$WALL_FILE"; }; WALL_FILE=""; }
trap record EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
timed "$SWEEP/trials/wall_time_s.txt"
.venv/bin/dno-run -m hydra/sweeper=optuna search=dno "hydra.sweeper.n_trials=$TRIALS" sweep_name=search \
  "hydra.sweep.dir=$SWEEP/trials" "$@"
record

BEST=$(.venv/bin/python -c 'import sys; from dno.reports.search_report import best_overrides
print(" ".join(best_overrides(sys.argv[1])))' "$SWEEP/trials")
timed "$SWEEP/default/wall_time_s.txt"
COMPARED="$SWEEP/default"
.venv/bin/dno-run -m "seed=$SEEDS" method=default "schedule.test_prompts=${TEST_PROMPTS:-200}" \
  sweep_name=search-compared "hydra.sweep.dir=$SWEEP/default" "$@"
if [ "$(.venv/bin/python -c 'import sys; from dno.runtime.search import load_study
print(load_study(sys.argv[1]).best_trial.number)' "$SWEEP/trials")" != 0 ]; then  # trial 0 is the default itself
  # shellcheck disable=SC2086  # BEST is key=value words without spaces
  .venv/bin/dno-run -m "seed=$SEEDS" "method=search best" "schedule.test_prompts=${TEST_PROMPTS:-200}" $BEST \
    sweep_name=search-compared "hydra.sweep.dir=$SWEEP/best" "$@"
  COMPARED="$SWEEP/default,$SWEEP/best"
fi
record

.venv/bin/dno-tables "runs='$COMPARED'" "out=$OUT/tables" compare_to=default ${TABLES_ARGS:-}
experiments/run_records.sh "$SWEEP/trials" "$OUT/trials"
cp "$SWEEP/trials/study.db" "$SWEEP/trials/optimization_results.yaml" "$SWEEP/trials/multirun.yaml" "$OUT/trials/"
for d in ${COMPARED//,/ }; do experiments/run_records.sh "$d" "$OUT/compared/$(basename "$d")"; done
.venv/bin/dno-report "runs=$OUT/trials" "title='DNO: search over DNO-Prct knobs (${TRIALS} trials)'" \
  "hydra.run.dir=$OUT/report" ${REPORT_ARGS:-}
.venv/bin/python -c 'import sys; from dno.reports.search_report import search_results
print(search_results(*sys.argv[1:]), end="")' "$SWEEP/trials" "$COMPARED" > "$REPORT.body"
seconds() { awk '{s += $1} END {print s}' "$1"; }  # summed over the script's starts (a resumed one adds its own)
{ echo "<!-- experiments/search.sh: $TRIALS trials, seeds $SEEDS; wall time (s): trials $(seconds "$SWEEP/trials/wall_time_s.txt"), compared points $(seconds "$SWEEP/default/wall_time_s.txt") -->"
  cat "$REPORT.body"; echo; cat "$OUT/tables/comparison.md"; } > "$REPORT"
rm "$REPORT.body"
echo "wrote $REPORT"
