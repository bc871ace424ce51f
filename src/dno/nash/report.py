"""results/nash.md from the runs of experiments/nash.sh: one table and one plot per problem, and
the Eq. 8 regression error against the number of pairs.

    python -m dno.nash.report results/nash results/nash.md
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from dno.nash.solve import plot_curves

METHOD_ORDER = ["dno_exact", "dno", "dno_explore", "dno_prct", "dno_prct_explore", "sppo", "sppo_explore", "bt_reward"]


def _label(name: str, summary: dict) -> str:
    return f"{name.removesuffix('_explore')} (explore {summary['explore']})" if name.endswith("_explore") else name


def _policy(p: list[float]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in p) + ")"


def regression_plot(rows: list[tuple[int, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, err = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(n, err, "o-", label="Eq. 8 fit vs exact update (L1)")
    ax.loglog(n, err[0] * np.sqrt(n[0] / n), ":", color="grey", label="slope -1/2 (1/sqrt(N))")
    ax.set_xlabel("pairs per iteration N")
    ax.set_ylabel("mean L1 distance to pi*_{t+1}")
    ax.set_title("Regression error of Eq. 8 (random 8x8 game)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(root: Path, out: Path) -> str:
    problems = sorted(p for p in root.iterdir() if p.is_dir() and p.name != "regression")
    rel = os.path.relpath(root, out.parent)  # image links relative to the report
    lines = ["# DNO's theory on exact tabular games", "",
             "Each problem is one prompt with n responses and a preference matrix P (`experiments/nash/`). "
             "Every method starts from the same random pi_1 (seed 0) with eta = 1. Exploitability of pi is "
             "max_y P(y > pi) - 1/2: 0 exactly at the Nash equilibrium (computed by linear programming), 1/2 at "
             "worst. \"average\" is the uniform mixture of the iterates (what Algorithm 1 returns), \"last\" the "
             "final iterate. \"monotonic min\" is the smallest P(pi_{t+1} > pi_t) - 1/2 - eta KL(pi_{t+1} || pi_t) "
             "over the iterations: Algorithm 1's guarantee is that it is >= 0 for the exact update. The sampled "
             "methods draw 1000 pairs (or samples) per iteration from pi_t, or from pi_t mixed with 10% of the "
             "uniform distribution (\"explore 0.1\"), and estimate r_t from 4 games against pi_t each with labels "
             "drawn from P. Regenerate with `experiments/nash.sh`.", ""]
    for problem in problems:
        runs = {p.name: json.loads((p / "summary.json").read_text()) for p in problem.iterdir()
                if (p / "summary.json").exists()}
        order = [m for m in METHOD_ORDER if m in runs]
        first = runs[order[0]]
        lines += [f"## {problem.name}", "",
                  f"Nash equilibrium {_policy(first['nash_policy'])}; {first['iterations']} iterations.", "",
                  "| method | exploitability (average) | exploitability (last) | L1(average, Nash) | "
                  "monotonic min | Eq. 8/13 regression error (mean L1) |", "|---|---|---|---|---|---|"]
        for m in order:
            s = runs[m]
            err = "-" if s["regression_error_mean"] is None else f"{s['regression_error_mean']:.4f}"
            lines.append(f"| `{_label(m, s)}` | {s['exploitability_avg']:.4f} | {s['exploitability_last']:.4f} | "
                         f"{s['avg_l1_to_nash']:.3f} | {s['monotonic_min']:.1e} | {err} |")
        plot_curves([(_label(m, runs[m]), runs[m]) for m in order], root / f"{problem.name}.png",
                    f"{problem.name}: exploitability of the average iterate", last=False)
        lines += ["", f"![exploitability per iteration on {problem.name}]({rel}/{problem.name}.png)", ""]
    regression = sorted((json.loads(p.read_text()) for p in root.glob("regression/*/summary.json")),
                        key=lambda s: s["pairs"])
    if regression:
        rows = [(s["pairs"], s["regression_error_mean"]) for s in regression]
        regression_plot(rows, root / "regression_error.png")
        lines += ["## Eq. 8's regression error against the number of pairs", "",
                  f"`dno` on random_8x8, {regression[0]['iterations']} iterations from the uniform policy: mean L1 "
                  "distance between the fitted policy and the exact update pi*_{t+1} from the same pi_t (Theorem 1).",
                  "", "| pairs N | mean L1 error |", "|---|---|",
                  *[f"| {n} | {e:.4f} |" for n, e in rows], "",
                  f"![regression error against N]({rel}/regression_error.png)", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


if __name__ == "__main__":
    report(Path(sys.argv[1]), Path(sys.argv[2]))
