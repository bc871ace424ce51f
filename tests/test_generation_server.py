"""generation.backend=openai_server: the loop starts a server per iteration with the configured
command (here the project's transformers server, `python -m dno.policy.serve`), samples through the
OpenAI-compatible completions API, and stops it; crashed or hung servers are clear errors."""

from __future__ import annotations

import json
import socket

import pytest
import torch
from omegaconf import OmegaConf

from dno.policy.load import load_model, load_tokenizer, prompt_ids
from dno.policy.sample import SamplingOptions
from dno.policy.server import GenerationError, ServerBackend, cpu_list
from dno.stages.records import Samples, read_rows
from helpers import SMOKE, dno_run, make_cfg


def serve(extra: str = "") -> str:
    """The command override for the project's test server (quoted: Hydra's grammar reserves braces)."""
    return f"generation.server.command='{{python}} -m dno.policy.serve {{checkpoint}} --port {{port}}{extra}'"


SERVER = [*SMOKE, "generation.backend=openai_server", serve(), "schedule.iterations=1", "logger=none"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random policy saved as a checkpoint directory, and its tokenizer."""
    cfg = make_cfg(*SMOKE)
    tok = load_tokenizer(cfg.model.tokenizer, cfg.cache_dir)
    model = load_model(cfg.model, cfg.cache_dir, tok)
    path = tmp_path_factory.mktemp("ckpt") / "policy"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def backend(**overrides):
    return ServerBackend(OmegaConf.merge(make_cfg(serve()).generation.server, overrides))


def port_open(url: str) -> bool:
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) == 0


@pytest.mark.parametrize("api,message", [
    ("text_only", "does not accept the request dno sends (a prompt of token ids, n, seed"),
    ("no_seed", "ignores `seed`: the same request drew different texts")])
def test_a_server_with_another_api_stops_before_sampling(tiny, tmp_path, api, message):
    path, _, _ = tiny
    server = ServerBackend(OmegaConf.merge(make_cfg(serve(f" --api {api}")).generation.server, {}))
    with pytest.raises(GenerationError, match=message.replace("(", r"\(").replace("`", "`")), \
            server.serving(str(path), tmp_path / "server.log", seed=5, dtype="float32"):
        pass


def test_server_samples_what_generate_draws_with_the_same_seed(tiny, tmp_path):
    path, model, tok = tiny
    sampling = SamplingOptions(max_new_tokens=10, temperature=1.0, top_p=1.0)  # top_k 50, as generate
    prompts = [[{"role": "user", "content": text}] for text in ("Name a colour.", "Write one word about the sea.")]
    with backend(concurrency=2).serving(str(path), tmp_path / "server.log", seed=5, dtype="float32") as server:
        first, n_tokens = server.sample(tok, prompts, sampling, n=3, seed=100)
        again, _ = server.sample(tok, prompts, sampling, n=3, seed=100)
        url = server.base_url
    assert not port_open(url) and server.process.poll() is not None  # stopped on leaving the block
    assert first == again and [len(r) for r in first] == [3, 3]
    assert 6 <= n_tokens <= 60
    for i, p in enumerate(prompts):  # prompt i is drawn with seed 100 + i, as in-process generate would
        ids = prompt_ids(tok, p)
        torch.manual_seed(100 + i)
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=True, temperature=1.0, top_p=1.0, max_new_tokens=10, num_return_sequences=3,
                             eos_token_id=[tok.eos_token_id, tok.eos_token_id], pad_token_id=tok.pad_token_id)
        expected = [tok.decode(row[len(ids):], skip_special_tokens=True).strip() for row in out]
        assert first[i] == expected
    log = (tmp_path / "server.log").read_text()
    posts = log.count("POST /v1/completions")
    assert log.startswith("$ ") and "-m dno.policy.serve" in log and posts == 2 + 4  # the API check, then samples


def test_a_server_that_never_answers_times_out(tmp_path):
    b = backend(command="{python} -c 'import time; time.sleep(120)'", startup_timeout_s=2)
    with pytest.raises(GenerationError, match="did not become healthy within 2 s"), \
            b.serving("unused", tmp_path / "server.log", seed=0, dtype="float32"):
        pass


def test_a_server_that_exits_at_start_is_reported_with_its_log(tmp_path):
    b = backend(command="{python} -c 'import sys; print(\"no GPU here\"); sys.exit(4)'")
    with pytest.raises(GenerationError, match="exited with code 4(.|\n)*no GPU here"), \
            b.serving("unused", tmp_path / "server.log", seed=0, dtype="float32"):
        pass


@pytest.mark.slow
def test_loop_samples_through_the_server_and_resumes_after_a_crash(tmp_path):
    run = tmp_path / "run"
    crash = dno_run(*SERVER, serve(" --exit-after 2"), f"hydra.run.dir={run}", check=False)
    assert crash.returncode == 3, crash.stderr[-2000:]
    assert "generation server exited with code 17" in crash.stderr
    assert not (run / "iter_1" / "samples.jsonl").exists() and not (run / "iter_1" / "DONE.sample").exists()
    assert (run / "init" / "policy" / "config.json").exists()  # pi_1 (random weights) written for the server

    # another server command can draw other samples: accepted for the stages not done (tests/test_provenance.py)
    dno_run(*SERVER, "resume=continue", f"hydra.run.dir={run}")
    rows = read_rows(run / "iter_1" / "samples.jsonl", Samples)
    assert len(rows) == 6 and all(len(r.responses) == 4 for r in rows)
    log = (run / "iter_1" / "server.log").read_text()
    assert log.count("$ ") == 2 and "--exit-after 2" in log  # one server per attempt, each logged
    assert log.split("$ ")[-1].count("POST /v1/completions") == 2 + 6  # the API check, a request (n=4) per prompt
    assert json.loads((run / "summary.json").read_text())["alpaca_eval/n_total"] == 8


@pytest.mark.slow
def test_unknown_placeholder_fails_before_compute(tmp_path):
    proc = dno_run(*SMOKE, "generation.backend=openai_server", "generation.server.command='serve {model}'",
                   f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "unknown placeholder 'model'" in proc.stderr
    assert not (tmp_path / "init").exists()


def test_generation_server_written_with_a_dot_chooses_the_group_option():
    from dno.apps import groups_spelled_as_keys

    argv = ["generation.server=vllm_cpu", "generation.server.port=8000", "generation.server=no_such_engine"]
    assert groups_spelled_as_keys(argv) == ["generation/server=vllm_cpu", *argv[1:]]
    server = make_cfg("generation/server=vllm_cpu").generation.server
    assert "vllm.entrypoints.openai.api_server" in server.command and "--no-enable-chunked-prefill" in server.command
    argv = ServerBackend(server).command("/ckpt", 8000, 3, "float32")
    assert argv[:4] == ["env", "VLLM_CPU_KVCACHE_SPACE=1", f"VLLM_CPU_OMP_THREADS_BIND={cpu_list()}",
                        "TORCHDYNAMO_DISABLE=1"] and argv[4] == ".venv-vllm/bin/python"
    assert argv[argv.index("--model") + 1] == "/ckpt" and argv[argv.index("--seed") + 1] == "3"


@pytest.mark.slow
def test_dno_run_takes_the_dotted_spelling(tmp_path):
    dno_run("generation.backend=openai_server", "generation.server=vllm_cpu", *SMOKE, "plan=true",
            f"hydra.run.dir={tmp_path}")
    overrides = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    assert "generation/server=vllm_cpu" in overrides
    assert "vllm.entrypoints.openai.api_server" in (tmp_path / ".hydra" / "config.yaml").read_text()
