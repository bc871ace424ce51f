#!/usr/bin/env bash
# dno-bench on the offline default (or on the overrides given), its table copied to results/.
#
#   experiments/bench.sh                                       # SmolLM2-135M, demo schedule: ~9 min on 2 CPU cores
#   experiments/bench.sh model=qwen2_5_0_5b_instruct model.dtype=bfloat16   # on a GPU: bf16 limit
#
# BENCH_DIR sets the output directory (default outputs/bench/<time>); REPORT where the table goes
# (default results/bench.md; bench.json is copied next to it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${BENCH_DIR:-outputs/bench/$(date +%Y-%m-%d_%H-%M-%S)}"
REPORT="${REPORT:-results/bench.md}"
.venv/bin/dno-bench "hydra.run.dir=$OUT" "$@"
cp "$OUT/bench.md" "$REPORT"
cp "$OUT/bench.json" "${REPORT%.md}.json"
