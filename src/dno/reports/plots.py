"""dno-tables' plots: the validation win-rates and the answer length per iteration, one line per row of
runs; a row with several seeds is drawn as its mean across seeds with a shaded 95% interval (mean ±
t(n-1) x the standard error across seeds). final_benchmarks.png: each row's final benchmarks as bars with
their 95% intervals (dno.reports.intervals), a panel per benchmark the runs ran."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from dno.reports.run_records import RunRecord, row_label, seed_rows

XLABEL = "iteration t (the policy after it, pi_{t+1}; 0 = pi_1)"


def plots(runs: list[RunRecord], out: Path) -> list[Path]:
    """win_rate.png (win-rate and LC win-rate vs pi_1) and length.png into `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for ax, key, title in ((axes[0], "eval/win_rate_vs_init", "win-rate vs pi_1"),
                           (axes[1], "eval/lc_win_rate_vs_init", "length-controlled win-rate vs pi_1")):
        draw(ax, runs, key, lambda r: 50.0)
        ax.axhline(50, color="grey", lw=0.8, ls=":")
        _decorate(ax, f"{title} (validation)", legend=ax is axes[1])
    axes[0].set_ylabel("%")
    fig.suptitle(f"Per iteration, judged by {', '.join(sorted({r.judge for r in runs}))}", fontsize=10)
    paths = [out / "win_rate.png", out / "length.png"]
    _save(fig, paths[0])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    draw(ax, runs, "eval/avg_length", lambda r: r.init_length)
    ax.set_ylabel("average answer length (chars)")
    _decorate(ax, "Answer length per iteration (validation)", legend=True)
    _save(fig, paths[1])
    return paths + final_benchmarks(runs, out)


def final_benchmarks(runs: list[RunRecord], out: Path) -> list[Path]:
    """final_benchmarks.png: a bar per row and benchmark with its interval; nothing when no run has per-prompt
    results of a final benchmark."""
    import matplotlib.pyplot as plt

    from dno.reports.intervals import BENCHMARKS, interval

    rows = seed_rows(runs)
    found = {b: [interval(row, b) for row in rows] for b in BENCHMARKS}
    found = {b: values for b, values in found.items() if any(values)}
    if not found:
        return []
    labels = [row_label(row) for row in rows]
    fig, axes = plt.subplots(1, len(found), figsize=(1.2 + 0.9 * len(rows) * len(found) + 2 * len(found), 4.5),
                             squeeze=False)
    for ax, (benchmark, values) in zip(axes[0], found.items(), strict=True):
        x = [k for k, v in enumerate(values) if v]
        means = np.array([values[k]["mean"] for k in x])
        errors = np.array([[values[k]["mean"] - values[k]["lo"], values[k]["hi"] - values[k]["mean"]] for k in x]).T
        ax.bar(x, means, yerr=np.nan_to_num(errors), capsize=4, color=[f"C{k % 10}" for k in x])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(BENCHMARKS[benchmark][0], fontsize=10)
        ax.set_xlabel(f"95% interval over seeds and {BENCHMARKS[benchmark][1]}", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Final benchmarks per row (each under its own judge: see the tables)", fontsize=10)
    _save(fig, out / "final_benchmarks.png")
    return [out / "final_benchmarks.png"]


def series(run: RunRecord, key: str, start: float | None) -> tuple[list[int], list[float]]:
    """A run's per-iteration `key`, with `start` (pi_1's value) at iteration 0."""
    return ([0] + [m["iteration"] for m in run.metrics],
            [math.nan if start is None else start] + [m.get(key, math.nan) for m in run.metrics])


def draw(ax, runs: list[RunRecord], key: str, start) -> None:
    """One line per row of runs (mean and band over seeds); `start(run)`: pi_1's value."""
    from scipy import stats as st

    for k, row in enumerate(seed_rows(runs)):
        color = f"C{k % 10}"
        if len(row) == 1:
            ax.plot(*series(row[0], key, start(row[0])), "o-", color=color, label=row[0].label)
            continue
        curves = [series(r, key, start(r)) for r in row]
        n = min(len(x) for x, _ in curves)
        ys = np.array([y[:n] for _, y in curves], dtype=float)
        with warnings.catch_warnings():  # a point no seed has (pi_1's length unknown) is simply not drawn
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(ys, 0)
            half = st.t.ppf(0.975, len(row) - 1) * np.nanstd(ys, 0, ddof=1) / math.sqrt(len(row))
        x = curves[0][0][:n]
        ax.plot(x, mean, "o-", color=color, label=f"{row_label(row)} (mean of {len(row)} seeds)")
        ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.2, lw=0)


def _decorate(ax, title: str, legend: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(XLABEL)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # long row labels: bbox_inches="tight" below makes room for them anyway
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
