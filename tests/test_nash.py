"""DNO's claims on exact tabular games (src/dno/nash), and the dno-nash command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dno.nash.game import check_preference, exploitability, load_preference, nash
from dno.nash.methods import METHODS, exact_step, softmax
from dno.nash.solve import preference_path, solve
from helpers import run

PROBLEMS = ["rock_paper_scissors", "weighted_cycle", "transitive", "random_8x8"]
SAMPLED = {"pairs": 1000, "opponents": 4}


def game(name: str) -> np.ndarray:
    return load_preference(preference_path(name))[0]


def test_equilibria_by_linear_programming_by_hand():
    assert nash(game("rock_paper_scissors")) == pytest.approx([1 / 3] * 3, abs=1e-9)
    # a > b with 0.6, b > c with 0.8, c > a with 0.7: the equilibrium is proportional to (0.3, 0.2, 0.1)
    assert nash(game("weighted_cycle")) == pytest.approx([1 / 2, 1 / 3, 1 / 6], abs=1e-9)
    assert nash(game("transitive")) == pytest.approx([1, 0, 0, 0], abs=1e-9)
    P = game("random_8x8")
    assert exploitability(P, nash(P)) == pytest.approx(0, abs=1e-9)
    assert exploitability(P, np.full(8, 1 / 8)) > 0.05  # and the game is not trivial
    assert exploitability(game("rock_paper_scissors"), np.array([1.0, 0, 0])) == 0.5  # paper beats rock surely


def test_exact_update_is_soft_policy_iteration_by_hand():
    P = game("rock_paper_scissors")
    pi = np.array([0.5, 0.3, 0.2])
    r = np.array([0.5 * 0.5 + 0.3 * 1 + 0, 0.5 * 0 + 0.3 * 0.5 + 0.2 * 1, 0.5 * 1 + 0 + 0.2 * 0.5])  # P pi
    expected = pi * np.exp(r / 0.5)
    assert softmax(exact_step(P, np.log(pi), 0.5)) == pytest.approx(expected / expected.sum())


def test_exact_dno_converges_to_uniform_on_rock_paper_scissors():
    s = solve(game("rock_paper_scissors"), "dno_exact", 20000, 1.0, 0, "random")
    assert np.abs(np.array(s["avg_policy"]) - 1 / 3).sum() < 0.01  # measured 0.0051
    assert s["exploitability_avg"] < 0.01  # measured 0.0020
    assert s["exploitability_last"] > 0.4  # the last iterate cycles out to the boundary (Appendix A's point)


@pytest.mark.parametrize("problem", PROBLEMS)
def test_monotonic_improvement_holds_at_every_exact_iteration(problem):
    s = solve(game(problem), "dno_exact", 500, 1.0, 0, "random")
    assert s["monotonic_min"] >= -1e-12  # P(pi_{t+1} > pi_t) - 1/2 - eta KL(pi_{t+1} || pi_t) >= 0


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_finds_the_best_response_of_the_transitive_control(method):
    s = solve(game("transitive"), method, 300, 1.0, 0, "random", **SAMPLED)
    assert np.argmax(s["last_policy"]) == 0 and s["last_policy"][0] > 0.99
    assert s["exploitability_last"] < 1e-3


def test_bradley_terry_reward_stays_exploitable_on_cycles_where_dno_is_not():
    for problem, at_least in (("rock_paper_scissors", 0.45), ("weighted_cycle", 0.09)):
        bt = solve(game(problem), "bt_reward", 2000, 1.0, 0, "random", **SAMPLED)
        exact = solve(game(problem), "dno_exact", 2000, 1.0, 0, "random")
        assert bt["exploitability_avg"] > at_least  # measured 0.4994 and 0.0999
        assert exact["exploitability_avg"] < 0.01  # measured 0.0058 and 0.0026
        assert max(bt["last_policy"]) > 0.99  # it settles on one response, which another beats


def test_eq8_regression_error_falls_as_the_number_of_pairs_grows():
    P = game("random_8x8")
    errors = [np.mean([solve(P, "dno", 5, 1.0, seed, "uniform", pairs=n, opponents=4)["regression_error_mean"]
                       for seed in range(3)]) for n in (30, 300, 3000)]
    assert errors[0] > errors[1] > errors[2] and errors[0] > 4 * errors[2]  # measured 0.100, 0.028, 0.011


def test_sampling_beyond_pi_t_lets_sampled_dno_recover_lost_responses():
    P = game("rock_paper_scissors")
    on_policy = solve(P, "dno", 2000, 1.0, 0, "random", **SAMPLED)
    mixed = solve(P, "dno", 2000, 1.0, 0, "random", **SAMPLED, explore=0.1)
    assert on_policy["exploitability_avg"] > 0.3 and mixed["exploitability_avg"] < 0.02  # measured 0.448, 0.007


def test_a_preference_matrix_must_be_a_preference():
    with pytest.raises(ValueError, match=r"P \+ P\^T must be 1"):
        check_preference(np.array([[0.5, 0.7], [0.7, 0.5]]))
    with pytest.raises(ValueError, match="square"):
        check_preference(np.array([[0.5, 0.5]]))


@pytest.mark.slow
def test_dno_nash_writes_the_summary_and_the_plot(tmp_path):
    out = tmp_path / "rps"
    run(["dno-nash", "preference=experiments/nash/rock_paper_scissors.csv", "method=dno_exact", "iterations=2000",
         "eta=1", "seed=0", "init=random", f"out={out}"], timeout=120)
    s = json.loads((out / "summary.json").read_text())
    for key in ("exploitability_avg", "exploitability_last", "avg_policy", "last_policy", "nash_policy", "monotonic"):
        assert key in s
    assert s["nash_policy"] == pytest.approx([1 / 3] * 3, abs=1e-6) and s["monotonic_min"] >= -1e-12
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.csv"
    bad.write_text(",a,b\na,0.5,0.9\nb,0.9,0.5\n")
    proc = run(["dno-nash", f"preference={bad}", f"out={tmp_path / 'bad'}"], check=False, timeout=120)
    assert proc.returncode == 2 and "P + P^T must be 1" in proc.stderr


@pytest.mark.parametrize("delimiter", [" ", ","])
def test_a_plain_matrix_from_numpy_savetxt_is_read_with_index_names(tmp_path, delimiter):
    P = load_preference(preference_path("rock_paper_scissors"))[0]
    path = tmp_path / "plain.csv"
    np.savetxt(path, P, delimiter=delimiter)  # no labels: what numpy writes
    plain, names = load_preference(path)
    assert names == ["0", "1", "2"] and np.array_equal(plain, P)
    labelled, labels = load_preference(preference_path("rock_paper_scissors"))  # the labelled form still works
    assert labels != names and np.array_equal(labelled, P)
    np.savetxt(path, P[:2], delimiter=delimiter)
    with pytest.raises(ValueError, match="square"):
        load_preference(path)
