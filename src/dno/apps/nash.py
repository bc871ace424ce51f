"""dno-nash: one method on one preference matrix, checked against the exact Nash equilibrium (dno.nash).

    dno-nash preference=experiments/nash/rock_paper_scissors.csv method=dno_exact iterations=2000 init=random out=DIR
    dno-nash preference=weighted_cycle method=bt_reward      # a bundled problem by name
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dno.config import CONF_DIR
from dno.nash.game import load_preference
from dno.nash.solve import plot_curves, preference_path, solve


@hydra.main(config_path=CONF_DIR, config_name="nash", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        P, _ = load_preference(preference_path(cfg.preference))
        extra = {k: cfg[k] for k in ("pairs", "opponents", "margin", "steps", "lr", "explore")}
        summary = solve(P, cfg.method, cfg.iterations, float(cfg.eta), cfg.seed, cfg.init, **extra)
    except (ValueError, FileNotFoundError) as e:
        print(f"dno-nash: {e}", file=sys.stderr)
        sys.exit(2)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    summary["preference"] = Path(str(cfg.preference)).stem
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot_curves([(cfg.method, summary)], out / "curves.png", f"{cfg.method} on {Path(cfg.preference).stem}")
    print(f"{cfg.method}: exploitability of the average {summary['exploitability_avg']:.4f}, of the last "
          f"{summary['exploitability_last']:.4f}; monotonic min {summary['monotonic_min']:.2e} -> {out}")


if __name__ == "__main__":
    main()
