"""dno-eval: the official AlpacaEval 2.0 path against a judge on 127.0.0.1, and the local path."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from dno.benchmarks.alpaca_eval2 import instruction_difficulty, merged_leaderboard
from dno.metrics import length_controlled
from dno.runtime.files import read_json
from dno.runtime.layout import RunDir
from helpers import SMOKE, dno_eval
from judge_server import JudgeServer

KEY_ENV, KEY = "DNO_TEST_EVAL_KEY", "sk-test-eval-5a4b3c2d1e-secret"
N = 10


def package_files() -> dict[str, str]:
    import alpaca_eval

    root = Path(alpaca_eval.__file__).parent
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def fake_alpaca_eval(tmp_path_factory) -> tuple[Path, Path]:
    """A 10-instruction reference set and a synthetic instruction-difficulty file in df_gamed.csv's
    layout: two gamed baselines, rows ordered baseline-major so row i is instruction i."""
    d = tmp_path_factory.mktemp("fake_alpaca_eval")
    ref = [{"instruction": f"Write two sentences about subject number {i}.",
            "output": "A reference answer. " * (1 + i % 3), "generator": "gpt4_turbo", "dataset": "helpful_base"}
           for i in range(N)]
    (d / "ref.json").write_text(json.dumps(ref))
    with open(d / "df_gamed.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty", "not_gamed_baseline"])
        gamed = (("gpt4_1106_preview_verbose", 0.7, 1.0), ("gpt4_1106_preview_concise", 0.3, -1.0))
        for model, preference, delta in gamed:
            for i in range(N):
                w.writerow([model, i, preference, delta, -1 + 0.2 * i, False])
    return d / "ref.json", d / "df_gamed.csv"


def official(server, fake, out, *extra, check=True):
    ref, df_gamed = fake
    return dno_eval("model=tiny_random", "schedule=smoke", "eval=alpaca_eval2",
                    f"eval.alpaca_eval2.reference_outputs={ref}", f"eval.alpaca_eval2.df_gamed_path={df_gamed}",
                    f"eval.alpaca_eval2.base_url={server.url}", f"eval.alpaca_eval2.api_key_env={KEY_ENV}",
                    "eval.alpaca_eval2.max_new_tokens=12", f"hydra.run.dir={out}", *extra, check=check,
                    env={KEY_ENV: KEY})


@pytest.mark.slow
def test_official_path_end_to_end_with_the_packages_lc_metric(fake_alpaca_eval, tmp_path):
    before = package_files()
    with JudgeServer() as server:
        official(server, fake_alpaca_eval, tmp_path / "eval")
        assert len(server.requests) == N and all(r["authorization"] == f"Bearer {KEY}" for r in server.requests)
        assert "model_identifier" in server.requests[0]["body"]["messages"][-1]["content"]  # the package's prompt
    summary = read_json(tmp_path / "eval" / "summary.json")
    assert summary["cost/final/alpaca_eval2/requests"] == N  # the annotator's calls, in the run's bill (on a
    assert summary["cost/total_usd"] == 0  # server of our own: free)
    out = RunDir(tmp_path / "eval").final.benchmark("alpaca_eval2")  # the benchmark's own folder
    assert read_json(out.summary)["alpaca_eval/lc_win_rate"] == summary["alpaca_eval/lc_win_rate"]
    assert summary["alpaca_eval/n_total"] == N
    outputs = read_json(out.model_outputs)
    assert len(outputs) == N and all(o["generator"] == "tiny-random-llama-init" for o in outputs)
    assert summary["alpaca_eval/avg_length"] == pytest.approx(int(sum(len(o["output"]) for o in outputs) / N))
    from alpaca_eval.metrics import get_length_controlled_winrate

    annotations = pd.read_json(out.annotations)
    with instruction_difficulty(str(fake_alpaca_eval[1])):
        expected = get_length_controlled_winrate(annotations, save_weights_dir=None)
    assert summary["alpaca_eval/lc_win_rate"] == pytest.approx(expected["length_controlled_winrate"])
    assert summary["alpaca_eval/win_rate"] == pytest.approx(expected["win_rate"])
    board = pd.read_csv(out.leaderboard, index_col=0)  # the official annotator: merged into a copy
    assert "tiny-random-llama-init" in board.index and "SPPO-Mistral7B-PairRM" in board.index
    assert list(board["length_controlled_winrate"]) == sorted(board["length_controlled_winrate"], reverse=True)
    assert package_files() == before  # nothing written into site-packages
    assert not [p for p in (tmp_path / "eval").rglob("*") if p.is_file() and KEY.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_missing_annotation_fails_loudly(fake_alpaca_eval, tmp_path):
    with JudgeServer() as server:
        server.faults = ["nolabel"]
        proc = official(server, fake_alpaca_eval, tmp_path / "eval", "eval.alpaca_eval2.annotator_model=my-vllm-judge",
                        check=False)
    assert proc.returncode == 3 and f"annotated {N - 1} of {N} instructions" in proc.stderr
    assert not (tmp_path / "eval" / "summary.json").exists()


def test_merged_leaderboard_keeps_the_public_rows():
    board = merged_leaderboard({"win_rate": 30.0, "length_controlled_winrate": 25.0, "avg_length": 2000,
                                "n_total": 805, "standard_error": 1.0}, "my-dno", "weighted_alpaca_eval_gpt4_turbo")
    assert board.loc["my-dno", "length_controlled_winrate"] == 25.0
    names = list(board.index)  # by LC: Snorkel DPO 26.39 > ours 25.0 > Llama-3-8B-Instruct 22.92
    assert names.index("Snorkel-Mistral-PairRM-DPO") < names.index("my-dno") < names.index("Meta-Llama-3-8B-Instruct")


@pytest.mark.slow
def test_local_path_on_a_smoke_checkpoint(smoke_run, tmp_path):
    dno_eval(*SMOKE, f"checkpoint={smoke_run / 'iter_2' / 'checkpoint'}", f"hydra.run.dir={tmp_path}")
    summary = read_json(tmp_path / "summary.json")
    annotations = read_json(RunDir(tmp_path).final.benchmark("local").annotations)
    assert summary["alpaca_eval/n_total"] == 8 == len(annotations)  # the smoke schedule's test split
    assert summary["alpaca_eval/lc_win_rate"] == pytest.approx(length_controlled(annotations)["lc_win_rate"])
    assert summary["alpaca_eval/baseline"] == "pi_1" and summary["alpaca_eval/annotator"] == "RulesOracle"
    # pi_1's answers here are the run's own (same model, split and seed): the baseline is the same
    run_baseline = read_json(RunDir(smoke_run).final.benchmark("local").reference_outputs)
    assert [a["output_1"] for a in annotations] == [r["output"] for r in run_baseline]


def test_the_annotators_price_goes_into_the_ledger_once_per_annotation(tmp_path):
    """alpaca_eval prices an annotation at its total tokens x its own rate ($10 per million for gpt-4-1106): the
    ledger recovers the tokens and prices them with conf/prices (the one completion token at the output price);
    a second reading of the same annotations (a resumed stage) adds nothing."""
    from dno.benchmarks.alpaca_eval2 import AlpacaEval2
    from dno.oracles import ledger
    from dno.runtime.layout import BenchmarkDir

    out = BenchmarkDir(tmp_path / "final" / "alpaca_eval2")
    out.path.mkdir(parents=True)
    rows = [{"instruction": f"q{i}", "output_1": "ref", "output_2": f"ours {i}",
             "preference_price_per_example": (1000 + i) * 0.01 / 1000} for i in range(3)]
    out.annotations.write_text(json.dumps(rows))
    bill = ledger.activate(tmp_path / "ledger.jsonl")
    try:
        AlpacaEval2(api_key_env=None).bill(out)
        AlpacaEval2(api_key_env=None).bill(out)
    finally:
        ledger.activate(None)
    paid = bill.rows()
    assert [r["prompt_tokens"] for r in paid] == [999, 1000, 1001] and all(r["completion_tokens"] == 1 for r in paid)
    assert [r["usd"] for r in paid] == pytest.approx([(999 + i) * 10 / 1e6 + 30 / 1e6 for i in range(3)])
