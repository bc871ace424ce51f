#!/usr/bin/env bash
# Issue 42's comparison: paying the judge only where a student trained on its verdicts is unsure (router=distilled)
# against full judging, against random routing at the same paid share (router=random) and against the student
# alone after iteration 1 (router=student_only), 3 seeds each, on the offline default (the seeded Table 1's DNO
# config: experiment=table1_dno, 200 test prompts), the rules judge billed as GPT-4-Turbo
# (oracle.bill_as=gpt-4-turbo-2024-04-09). Then results/routing.md (experiments/routing_report.py).
#
#   experiments/routing.sh                                     # ~1.5 h alone on 2 CPU cores (4 runs of 6 to 25 min)
#   FULL_RUNS=run SEEDS=0,1 experiments/routing.sh model=tiny_random schedule=smoke   # the test's smallest form
#
# The full-judge arm is FULL_RUNS: the seeded Table 1's DNO runs (default results/table1_seeds/runs, the same config
# and code path: router=none changes nothing), or `run` to run it here (router=none). The random arm runs at the
# distilled runs' measured paid share of each routed iteration (mean over seeds); when the distilled router paid for
# every prompt, random routing at that share is full judging and is not run again. Every arm is a fixed sweep
# directory of resumable runs: the same command after a stop goes on where it stopped.
# SWEEP_DIR (default multirun/routing), REPORT (default results/routing.md), RECORDS_DIR (default
# results/routing/runs): the arms' records (experiments/run_records.sh), which the report is built from.
# ROUTER_ARGS: overrides of every routed arm (router.* keys); AUDIT_ARGS: of the distilled and random arms (the audit
# slice and the bound, e.g. "router.audit_share=0.33 router.alpha=0.5"); both empty by default.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS="${SEEDS:-0,1,2}"
SWEEP="${SWEEP_DIR:-multirun/routing}"
REPORT="${REPORT:-results/routing.md}"
RECORDS="${RECORDS_DIR:-results/routing/runs}"
FULL_RUNS="${FULL_RUNS:-results/table1_seeds/runs}"
COMMON=(experiment=table1_dno schedule.test_prompts=200 oracle.bill_as=gpt-4-turbo-2024-04-09 "seed=$SEEDS")
start=$(date +%s)

arm() {  # arm NAME METHOD OVERRIDES...: one sweep over the seeds, records copied out
  local name="$1" method="$2"; shift 2
  .venv/bin/dno-run -m "${COMMON[@]}" "method=$method" "hydra.sweep.dir=$SWEEP/$name" sweep_name=routing "$@"
  experiments/run_records.sh "$SWEEP/$name" "$RECORDS/$name" >/dev/null
  for run in "$SWEEP/$name"/*/; do  # the routing record of each routed iteration (small), for the report's curve
    for it in "$run"iter_*/; do
      [ -f "$it/routing.jsonl" ] || continue
      dest="$RECORDS/$name/$(basename "$run")/$(basename "$it")"
      mkdir -p "$dest" && cp "$it/routing.jsonl" "$it/judgements.jsonl" "$dest/"
    done
  done
}

if [ "$FULL_RUNS" = run ]; then
  arm full DNO router=none "$@"
  FULL_RUNS="$RECORDS/full"
fi
read -r -a ROUTER <<< "${ROUTER_ARGS:-}"
read -r -a AUDIT <<< "${AUDIT_ARGS:-}"
arm student_only DNO-student-only router=student_only "${ROUTER[@]}" "$@"
arm distilled DNO-distilled router=distilled "${ROUTER[@]}" "${AUDIT[@]}" "$@"
SHARE=$(.venv/bin/python experiments/routing_report.py share "$RECORDS/distilled")
echo "distilled runs' paid share per routed iteration: $SHARE"
if [ "$SHARE" != full ]; then
  arm random DNO-random router=random "router.paid_share=$SHARE" "${ROUTER[@]}" "${AUDIT[@]}" "$@"
fi
echo "routing wall time: $(( $(date +%s) - start )) s" | tee "$SWEEP/wall_time.txt"
.venv/bin/python experiments/routing_report.py report --full "$FULL_RUNS" --arms "$RECORDS" \
  --wall "$SWEEP/wall_time.txt" --out "$REPORT" --plot "$(dirname "$RECORDS")/routing_curve.png"
