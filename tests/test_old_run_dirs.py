"""A run directory made before the second redesign (commit 1d0c6b8: rows of format 2, `sampler=dno`, the old
module paths in its recorded config) resumes under today's code and ends where the old code ended.

tests/fixtures/run_made_at_1d0c6b8 is that run (`dno-run model=tiny_random schedule=smoke
oracle.concise_max_words=8 logger=none`) stopped after iteration 1's pairs stage; the .expected.json beside
it holds the summary and metrics the old code reached when it ran on to the end."""

from __future__ import annotations

import json
import shutil

import pytest

from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.records import VERSION, PairRow, read_rows
from helpers import REPO, dno_run

FIXTURE = REPO / "tests" / "fixtures" / "run_made_at_1d0c6b8"


def without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


# metrics added since 1d0c6b8 (issue 31: the Batch API, cached prompt tokens, the plan); with no batch and no
# provider cache they are zero, and the plan/ ones are the plan made when the resume started
# (issue 36: the judge's bill from the run's ledger, nothing paid with the rules judge)
ADDED = {"oracle/batch_requests": 0, "oracle/cached_tokens": 0, "cost/total_requests": 0, "cost/total_usd": 0}
SUMMARY_ADDED = {"cost/total_requests": 0, "cost/total_usd": 0, "oracle/usd": 0.0}


def as_old(metrics: dict, added: dict = ADDED) -> dict:
    """The metrics the old code logged: today's, less the keys added since, which must hold their known values."""
    for key, value in added.items():
        assert metrics.pop(key, value) == value, key
    return {k: v for k, v in metrics.items() if not k.startswith("plan/")}


@pytest.mark.slow
def test_a_run_directory_made_before_the_redesign_resumes_to_the_old_codes_results(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    old_pairs = (run_dir / "iter_1" / "pairs.jsonl").read_text()
    assert '"version": 2' in old_pairs and '"prompt_id"' in old_pairs  # the old format, flat prompts
    overrides = [line.removeprefix("- ") for line in (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines()]
    proc = dno_run(*overrides, f"hydra.run.dir={run_dir}")
    expected = json.loads((REPO / "tests" / "fixtures" / "run_made_at_1d0c6b8.expected.json").read_text())
    run = RunDir(run_dir)
    assert as_old(without_times(read_json(run.summary)), SUMMARY_ADDED) == expected["summary"]
    # training's floats agree to 1e-5, not to the last bit, across CPUs (AVX2 or AVX-512 kernels sum differently)
    # and layouts (issue 43's prefix sharing sums in another order); the implicit margin to 1e-4: a difference of
    # log-prob sums near -600 on the tiny model, where one float32 step is 6e-5 (measured: 1.2e-5 apart)
    got = [as_old(without_times(m)) for m in read_jsonl(run.metrics)]
    assert [sorted(m) for m in got] == [sorted(m) for m in expected["metrics"]]
    for ours, theirs in zip(got, expected["metrics"], strict=True):
        for key, value in theirs.items():
            close = pytest.approx(value, rel=1e-5, abs=1e-4 if key == "train/implicit_margin" else 0)
            assert ours[key] == (close if isinstance(value, float) else value), key
    assert "skip iter_1/pairs (done)" in (run_dir / "run.log").read_text() and "Traceback" not in proc.stderr
    resumed = read_json(run.provenance)["resumes"]
    assert len(resumed) == 1 and resumed[0]["other_code"] and "accepted_changes" not in resumed[0]
    pairs = read_rows(run.iteration(1).pairs, PairRow)  # rewritten by the reference stage, in today's format
    assert all(p.ref_chosen_logps is not None for p in pairs) and f'"version": {VERSION}' in \
        run.iteration(1).pairs.read_text()
