#!/usr/bin/env bash
# The records of a sweep's runs, copied into OUT/<job>/ with the run directory's own layout: what dno-tables and
# dno-report read (the Hydra config, metrics, summary, provenance, the W&B run's id, the validation judgements and
# the final stage's annotations and summaries), without checkpoints, samples or W&B files: small enough to commit.
#
#   experiments/run_records.sh SWEEP_DIR OUT
set -euo pipefail
SWEEP="$1"
OUT="$(mkdir -p "$2" && cd "$2" && pwd)"
cd "$SWEEP"
for run in */; do
  run="${run%/}"
  [ -f "$run/summary.json" ] || continue
  mkdir -p "$OUT/$run"
  find "$run" \( -path "$run/.hydra/*.yaml" -o -name metrics.jsonl -o -name summary.json -o -name provenance.json \
    -o -name wandb_run.json -o -name ledger.jsonl -o -name plan.json -o -name eval_judgements.jsonl \
    -o -path "*/final/*/annotations.json" -o -path "*/final/*/summary.json" \) -type f -print0 |
    while IFS= read -r -d '' f; do mkdir -p "$OUT/$(dirname "$f")"; cp "$f" "$OUT/$f"; done
done
echo "records of $(ls "$OUT" | wc -l) runs in $OUT"
