"""experiments/routing.sh's arithmetic: the distilled runs' paid share (`share`) and results/routing.md (`report`).

    python experiments/routing_report.py share results/routing/runs/distilled
    python experiments/routing_report.py report --full results/table1_seeds/runs --arms results/routing/runs \
        --out results/routing.md --plot results/routing/routing_curve.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def routed_shares(records: Path) -> dict[int, list[float]]:
    """router/paid_share of each routed iteration, one value per run (seed)."""
    shares: dict[int, list[float]] = {}
    for metrics in sorted(records.glob("*/metrics.jsonl")):
        for line in metrics.read_text().splitlines():
            row = json.loads(line)
            if "router/paid_share" in row:
                shares.setdefault(row["iteration"], []).append(row["router/paid_share"])
    return shares


def share(records: Path) -> str:
    """The mean paid share over seeds of iterations 2, 3, ... as a Hydra list, or `full` when every prompt was paid."""
    shares = routed_shares(records)
    if not shares:
        raise SystemExit(f"{records}: no run logged router/paid_share (are these router=distilled runs?)")
    means = [statistics.fmean(shares[t]) for t in sorted(shares)]
    return "full" if all(m >= 1.0 for m in means) else "[" + ",".join(f"{m:.4f}" for m in means) + "]"


def router_rows(arms: dict[str, list[Path]]) -> list[str]:
    """Per arm and routed iteration, over seeds: paid share, audit agreement, kappa, pair agreement, ECE, how many
    seeds' students were certified, and the dollars not paid."""
    keys = ("router/paid_share", "router/audit_agreement", "router/audit_kappa", "router/pair_agreement",
            "router/ece", "cost/router_saved_usd", "cost/judge/usd")
    lines = ["| arm | iteration | seeds | paid share | audit agreement | audit kappa | pair agreement | ECE | "
             "certified (threshold) | judge paid (USD) | not paid (USD) |", "|---" * 11 + "|"]
    for arm, runs in arms.items():
        by_t: dict[int, list[dict]] = {}
        for run in runs:
            for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()):
                if "router/paid_share" in row:
                    by_t.setdefault(row["iteration"], []).append(row)
        for t, rows in sorted(by_t.items()):
            cell = {k: mean_range([r[k] for r in rows if k in r]) for k in keys}
            certified = [r["router/threshold"] for r in rows if "router/threshold" in r]
            lines.append(f"| {arm} | {t} | {len(rows)} | {cell['router/paid_share']} | "
                         f"{cell['router/audit_agreement']} | {cell['router/audit_kappa']} | "
                         f"{cell['router/pair_agreement']} | {cell['router/ece']} | {len(certified)} of {len(rows)}"
                         f"{' (' + ', '.join(f'{c:.2f}' for c in certified) + ')' if certified else ''} | "
                         f"{cell['cost/judge/usd']} | {cell['cost/router_saved_usd']} |")
    return lines


def mean_range(values: list[float]) -> str:
    if not values:
        return "-"
    m = statistics.fmean(values)
    return f"{m:.3f}" if len(values) == 1 or max(values) == min(values) else \
        f"{m:.3f} [{min(values):.3f}, {max(values):.3f}]"


def routed_prompts(run: Path) -> list[dict]:
    """Every prompt of every routed iteration of `run`: the student's confidence and decisions and the judge's,
    re-judged with the run's own (free) rules judge and pair rule where the student answered."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from dno.stages.records import Judged, read_rows
    from dno.stages.route import decisions

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    oracle = instantiate(cfg.oracle, bill_as=None)
    rule = instantiate(cfg.loss).pairs
    out = []
    for it in sorted(run.glob("iter_*/routing.jsonl")):
        judged = {j.prompt.id: j for j in read_rows(it.parent / "judgements.jsonl", Judged)}
        for r in map(json.loads, it.read_text().splitlines()):
            if "confidence" not in r:
                continue
            j = judged[r["prompt_id"]]
            truth = decisions(rule, j, oracle.judge(j.prompt, j.candidates))
            out.append({"run": f"{run.parent.name}/{run.name}", "iteration": it.parent.name,
                        "confidence": r["confidence"], "route": r["route"],
                        "agree": {tuple(p) for p in r["student_pairs"]} == truth})
    return out


def routed_iterations(prompts: list[dict]) -> list[list[dict]]:
    """The prompts grouped by their routed iteration (run, iteration): the unit that pays a share of its prompts."""
    groups: dict[tuple, list[dict]] = {}
    for p in prompts:
        groups.setdefault((p["run"], p["iteration"]), []).append(p)
    return list(groups.values())


def agreement_curve(prompts: list[dict], shares: list[float], seed: int = 0) -> dict[str, list[float]]:
    """Agreement of the labels with the judge when the least confident `share` of each routed iteration's prompts is
    paid (the rest the student's), against paying a random `share` (its expectation)."""
    import random

    units = routed_iterations(prompts)
    rng = random.Random(seed)
    ordered, at_random = [], []
    for s in shares:
        agree_o = agree_r = n = 0
        for items in units:
            keyed = sorted(items, key=lambda p: (p["confidence"], rng.random()))
            paid = round(s * len(items))
            agree_o += paid + sum(p["agree"] for p in keyed[paid:])
            agree_r += paid + (len(items) - paid) * statistics.fmean(p["agree"] for p in items)
            n += len(items)
        ordered.append(agree_o / n)
        at_random.append(agree_r / n)
    return {"ordered": ordered, "random": at_random}


def paired_at(prompts: list[dict], share: float, samples: int = 2000, seed: int = 0) -> dict:
    """Least-confident-first minus random routing's label agreement at `share`, on the same prompts.

    p: a randomisation test, the share of `samples` random routings (the same number paid in every routed
    iteration, chosen at random) whose agreement is at least the ordered routing's. Interval: a bootstrap of the
    difference over prompts, resampled within their routed iteration."""
    import numpy as np

    units = routed_iterations(prompts)
    n = sum(map(len, units))
    curve = agreement_curve(prompts, [share])
    ordered, expected = curve["ordered"][0], curve["random"][0]
    rng = np.random.default_rng(seed)
    agree = [np.array([q["agree"] for q in u], dtype=float) for u in units]

    def random_routing() -> float:
        total = 0.0
        for a in agree:
            paid = round(share * len(a))
            unpaid = rng.permutation(len(a))[paid:]
            total += paid + a[unpaid].sum()
        return total / n

    at_least = sum(random_routing() >= ordered - 1e-12 for _ in range(samples))
    diffs = []
    for _ in range(samples // 4):
        drawn = [u[i] for u in units for i in rng.integers(len(u), size=len(u))]
        drawn = [{**q, "iteration": (q["run"], q["iteration"])} for q in drawn]
        c = agreement_curve(drawn, [share])
        diffs.append(c["ordered"][0] - c["random"][0])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": ordered - expected, "lo": float(lo), "hi": float(hi), "p": (1 + at_least) / (1 + samples),
            "prompts": n, "units": len(units)}


def plot_curve(curve: dict, shares: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot([100 * s for s in shares], [100 * a for a in curve["ordered"]], marker="o", label="least confident paid")
    ax.plot([100 * s for s in shares], [100 * a for a in curve["random"]], marker="s", label="random prompts paid")
    ax.axvline(30, color="grey", linestyle=":", label="goal: 30% paid")
    ax.set_xlabel("prompts paid from iteration 2 on (%)")
    ax.set_ylabel("labels equal to the judge's (%)")
    ax.set_title("Routing the rules judge's verdicts (3 seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def plans(shares: dict[str, float]) -> list[str]:
    """The paper-scale plan (experiments/judge_bill.py's DNO-More-Data) without a router and with each share."""
    import subprocess
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from judge_bill import PAPER, REPO

    lines = ["| judge stage paid from iteration 2 on | paid judge requests | direct USD | Batch API USD |",
             "|---|---|---|---|"]
    for label, s in {"every prompt (no router)": None, **shares}.items():
        with tempfile.TemporaryDirectory() as out:
            extra = [] if s is None else ["router=distilled", f"router.expected_paid_share={s}"]
            subprocess.run([str(REPO / ".venv" / "bin" / "dno-run"), *PAPER, *extra, f"hydra.run.dir={out}"],
                           cwd=REPO, check=True, capture_output=True)
            total = json.loads((Path(out) / "plan.json").read_text())["total"]
        lines.append(f"| {label} | {total['requests']:,} | {total['usd']:,.0f} | {total['usd_batch']:,.0f} |")
    return lines


def first_iterations_agree(full: list[Path], arms: dict[str, list[Path]]) -> list[str]:
    """Whether every routed run's iteration 1 (judged in full, as the full arm's) is the full arm's run of the same
    seed: the pairing of the comparison holds only then."""
    from omegaconf import OmegaConf

    def first(run: Path) -> tuple:
        row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        return row.get("pairs/new"), row.get("eval/win_rate_vs_init"), row.get("data/student_score_mean")

    by_seed = {OmegaConf.load(r / ".hydra" / "config.yaml").seed: first(r) for r in full}
    same = [first(r) == by_seed.get(OmegaConf.load(r / ".hydra" / "config.yaml").seed)
            for runs in arms.values() for r in runs]
    return [f"Iteration 1 (judged in full in every arm) equals the full arm's of the same seed in {sum(same)} of "
            f"{len(same)} routed runs (new pairs, validation win-rate, mean score): the arms are paired by seed."]


def write_report(args) -> None:
    """results/routing.md from the arms' records (see experiments/routing.sh)."""
    from omegaconf import OmegaConf

    from dno.reports.comparison import comparison
    from dno.reports.run_records import find_runs, read_run

    arms = {p.name: find_runs(str(p)) for p in sorted(args.arms.iterdir()) if p.is_dir() and p.name != "full"}
    full = [r for r in find_runs(str(args.full)) if OmegaConf.load(r / ".hydra" / "config.yaml").method == "DNO"]
    records = [read_run(p) for p in full + [r for runs in arms.values() for r in runs]]
    # every routed prompt the student predicted: the distilled arm's and the student-only arm's iterations 2 on
    prompts = [p for arm in ("distilled", "student_only") for run in arms.get(arm, []) for p in routed_prompts(run)]
    shares = [i / 10 for i in range(11)]
    curve = agreement_curve(prompts, shares) if prompts else None
    measured = statistics.fmean(v for vs in routed_shares(args.arms / "distilled").values() for v in vs)
    lines = [f"<!-- experiments/routing.sh; {args.wall.read_text().strip() if args.wall and args.wall.exists() else ''}"
             " -->", "# Paying the judge only where a student is unsure (router=distilled)", "",
             "## The arms' results on the test prompts", "",
             comparison(records, compare_to="DNO", samples=1000, lc_samples=40, seed=0).split("\n", 2)[2], "",
             *first_iterations_agree(full, arms), "",
             "## The router, per routed iteration (mean [min, max] over seeds)", "", *router_rows(arms), ""]
    if curve:
        at30 = paired_at(prompts, 0.3)
        lines += ["## Uncertainty against random routing, on every prompt of the routed iterations", "",
                  f"{len(prompts)} prompts ({len({(p['run'], p['iteration']) for p in prompts})} routed iterations of "
                  "the distilled and student-only runs); the judge's decisions re-derived with the free rules judge "
                  "for every prompt.",
                  "",
                  "| paid share | labels equal to the judge's, least confident paid | random paid |", "|---|---|---|",
                  *[f"| {s:.0%} | {100 * o:.1f} | {100 * r:.1f} |" for s, o, r in
                    zip(shares, curve["ordered"], curve["random"], strict=True)], "",
                  f"At 30% paid: least confident minus random {100 * at30['diff']:+.1f} points "
                  f"[{100 * at30['lo']:+.1f}, {100 * at30['hi']:+.1f}] "
                  "(a bootstrap over prompts within their iteration), "
                  f"p {at30['p']:.4f} (the share of 2000 random routings of the same {at30['prompts']} prompts "
                  "paying as many in each iteration that agree at least as often).", ""]
        if args.plot:
            plot_curve(curve, shares, args.plot)
    lines += ["## The paper-scale plan (DNO-More-Data, experiments/judge_bill.py) with and without routing", "",
              *plans({f"{measured:.0%} (this experiment's distilled runs)": measured, "30% (the goal)": 0.3}), ""]
    from dno.runtime.files import write_keeping_notes

    write_keeping_notes(args.out, "\n".join(lines))
    print(args.out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("share").add_argument("records", type=Path)
    rep = sub.add_parser("report")
    rep.add_argument("--full", type=Path, required=True)
    rep.add_argument("--arms", type=Path, required=True)
    rep.add_argument("--wall", type=Path)
    rep.add_argument("--out", type=Path, required=True)
    rep.add_argument("--plot", type=Path)
    args = parser.parse_args()
    if args.command == "share":
        print(share(args.records))
    else:
        write_report(args)


if __name__ == "__main__":
    main()
