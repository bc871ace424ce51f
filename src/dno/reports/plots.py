"""dno-tables' plots: the validation win-rates and the answer length per iteration, one line per row of
runs; a row with several seeds is drawn as its mean across seeds with a shaded 95% interval (mean ±
t(n-1) x the standard error across seeds)."""

from __future__ import annotations

import math
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
    return paths


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

    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
