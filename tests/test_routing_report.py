"""experiments/routing_report.py's test of uncertainty against random routing, on cases with a known answer."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import REPO


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("routing_report", REPO / "experiments" / "routing_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prompts(agree_by_confidence: list[bool], run: str = "distilled/0") -> list[dict]:
    return [{"run": run, "iteration": "iter_2", "confidence": c / len(agree_by_confidence), "agree": a,
             "route": "student"} for c, a in enumerate(agree_by_confidence)]


def test_the_agreement_curve_by_hand(report):
    # 10 prompts, the 3 least confident wrong, the rest right: paying the least confident 30% fixes all three
    ps = prompts([False] * 3 + [True] * 7)
    curve = report.agreement_curve(ps, [0.0, 0.3, 1.0])
    assert curve["ordered"] == pytest.approx([0.7, 1.0, 1.0])
    # random: 3 paid (right) + 7 unpaid at the mean agreement 0.7 -> (3 + 4.9) / 10
    assert curve["random"] == pytest.approx([0.7, 0.79, 1.0])


def test_confidence_that_finds_the_errors_beats_random_and_one_that_does_not_does_not(report):
    found = prompts(([False] * 3 + [True] * 7) * 4)  # 40 prompts, one iteration: wrong ones least confident
    found.sort(key=lambda p: p["agree"])
    for k, p in enumerate(found):
        p["confidence"] = k / len(found)
    r = report.paired_at(found, 0.3, samples=500)
    assert r["diff"] == pytest.approx(1.0 - (12 + 28 * 28 / 40) / 40) and r["p"] < 0.01 and r["lo"] > 0
    # confidence unrelated to agreement: the wrong ones spread evenly through the order
    blind = prompts(([True] * 2 + [False] + [True] * 1) * 10)
    r = report.paired_at(blind, 0.3, samples=500)
    assert abs(r["diff"]) < 0.05 and r["p"] > 0.05 and r["lo"] <= 0 <= r["hi"]


def test_the_routing_numbers_in_the_readme_are_results_routing_md():
    """Every number the README's routing paragraph quotes is in results/routing.md (from routing.sh)."""
    import re

    readme = (REPO / "README.md").read_text()
    paragraph = readme.split("**Paying the judge only where it is unsure.**", 1)[1].split("\n\n", 1)[0]
    results = " ".join((REPO / "results" / "routing.md").read_text().split())
    quoted = re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?![\w])", re.sub(r"`[^`]*`|\]\([^)]*\)", "", paragraph))
    assert len(quoted) >= 6
    for number in quoted:
        assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d])", results), number
