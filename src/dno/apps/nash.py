"""dno-nash: one method on one preference matrix, checked against the exact Nash equilibrium (dno.nash).

    dno-nash preference=experiments/nash/rock_paper_scissors.csv method=dno_exact iterations=2000 init=random out=DIR
    dno-nash preference=weighted_cycle method=bt_reward      # a bundled problem by name
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="nash", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.nash.solve import solve_file

    keys = ("method", "iterations", "eta", "seed", "init", "pairs", "opponents", "margin", "steps", "lr", "explore")
    try:
        s = solve_file(cfg.preference, Path(cfg.out), **{k: cfg[k] for k in keys})
    except (ValueError, FileNotFoundError) as e:  # not a preference matrix, or no such file: nothing computed
        print(f"dno-nash: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{cfg.method}: exploitability of the average {s['exploitability_avg']:.4f}, of the last "
          f"{s['exploitability_last']:.4f}; monotonic min {s['monotonic_min']:.2e} -> {cfg.out}")


if __name__ == "__main__":
    main()
