"""One method on one preference matrix, checked against the exact Nash equilibrium (dno-nash).

    dno-nash preference=experiments/nash/rock_paper_scissors.csv method=dno_exact iterations=2000 init=random out=DIR
    dno-nash preference=weighted_cycle method=bt_reward      # a bundled problem by name

Writes DIR/summary.json: `exploitability_avg` (of the uniform mixture of pi_1..pi_{T+1}, what
Algorithm 1 returns), `exploitability_last`, `avg_policy`, `last_policy`, `nash_policy` (by linear
programming), `monotonic`: P(pi_{t+1} > pi_t) - 1/2 - eta KL(pi_{t+1} || pi_t) per iteration (>= 0
for the exact update; its minimum as `monotonic_min`), `regression_error` (L1 to the exact update,
for the sampled regressions), and the exploitability curves; DIR/curves.png plots them (log scale).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dno.nash.game import exploitability, load_preference, nash
from dno.nash.methods import METHODS, Game, Sampled

REPO = Path(__file__).resolve().parents[3]
BUNDLED = REPO / "experiments" / "nash"


def preference_path(preference: str) -> Path:
    """A CSV path, or the name of a bundled problem (experiments/nash/NAME.csv)."""
    path = Path(preference)
    if path.suffix != ".csv" and (BUNDLED / f"{preference}.csv").exists():
        return BUNDLED / f"{preference}.csv"
    return path


def curve_points(T: int, n_points: int = 200) -> list[int]:
    """Iteration indices 0..T, log-spaced, for curves that stay small for long runs."""
    return sorted({int(i) for i in np.unique(np.geomspace(1, T + 1, n_points).astype(int) - 1)} | {T})


def solve(P: np.ndarray, method: str, iterations: int, eta: float, seed: int, init: str = "uniform",
          **sampled) -> dict:
    """`method` from pi_1 (`init`: uniform or random) for `iterations` on the game P; `sampled`: the sampled
    methods' settings (`Sampled`). The summary of the module docstring."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if iterations < 1 or eta <= 0:
        raise ValueError(f"iterations must be >= 1 and eta > 0, got {iterations}, {eta}")
    rng = np.random.default_rng(seed)
    n = P.shape[0]
    if init == "uniform":
        pi1 = np.full(n, 1.0 / n)
    elif init == "random":
        pi1 = rng.dirichlet(np.ones(n))
    else:
        raise ValueError(f"init must be uniform or random, got {init!r}")
    traj = METHODS[method](Game(P, pi1, iterations, eta), Sampled(**sampled), rng)
    its = np.array(traj.iterates)
    running = np.cumsum(its, axis=0) / np.arange(1, len(its) + 1)[:, None]
    prev, nxt = its[:-1], its[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        kls = np.where(nxt > 0, nxt * (np.log(nxt) - np.log(prev)), 0.0).sum(axis=1)  # KL(pi_{t+1} || pi_t)
    monotonic = (np.einsum("ti,ij,tj->t", nxt, P, prev) - 0.5 - eta * kls).tolist()
    points = curve_points(iterations)
    star = nash(P)
    return {
        "method": method, "iterations": iterations, "eta": eta, "seed": seed, "init": init, **sampled,
        "exploitability_avg": exploitability(P, running[-1]), "exploitability_last": exploitability(P, its[-1]),
        "avg_policy": running[-1].tolist(), "last_policy": its[-1].tolist(), "nash_policy": star.tolist(),
        "nash_exploitability": exploitability(P, star), "avg_l1_to_nash": float(np.abs(running[-1] - star).sum()),
        "monotonic_min": float(min(monotonic)), "monotonic": [monotonic[i - 1] for i in points if i > 0],
        "regression_error": traj.regression_error,
        "regression_error_mean": float(np.mean(traj.regression_error)) if traj.regression_error else None,
        "curve_iterations": points,
        "exploitability_avg_curve": [exploitability(P, running[i]) for i in points],
        "exploitability_last_curve": [exploitability(P, its[i]) for i in points],
    }


def plot_curves(summaries: list[tuple[str, dict]], path: Path, title: str, last: bool = True) -> None:
    """Exploitability of the average iterate (and of the last one, when `last`) per iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (label, s) in enumerate(summaries):
        x = np.array(s["curve_iterations"]) + 1
        ax.plot(x, np.maximum(s["exploitability_avg_curve"], 1e-6), "-", color=f"C{k}", label=f"{label}: average")
        if last:
            ax.plot(x, np.maximum(s["exploitability_last_curve"], 1e-6), ":", color=f"C{k}", label=f"{label}: last")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("iteration t (policy pi_t; 1 = start)")
    ax.set_ylabel("exploitability: max_y P(y > pi) - 1/2")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def solve_file(preference: str, out: Path, **settings) -> dict:
    """dno-nash: `solve` on the game of `preference` (a CSV or a bundled name) with `settings` (`solve`'s
    arguments by name), written to out/summary.json and out/curves.png. A matrix that is not a preference
    raises ValueError."""
    P, _ = load_preference(preference_path(preference))
    summary = solve(P, **{**settings, "eta": float(settings["eta"])})
    method = summary["method"]
    out.mkdir(parents=True, exist_ok=True)
    summary["preference"] = Path(str(preference)).stem
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_curves([(method, summary)], out / "curves.png", f"{method} on {Path(preference).stem}")
    return summary
