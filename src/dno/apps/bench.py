"""dno-bench: where an iteration's time goes, against the machine's limit and against TRL (dno.reports.bench).

    dno-bench                                   # the offline default (SmolLM2-135M, demo schedule)
    dno-bench model=tiny_random schedule=smoke  # seconds
"""

from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes, job
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.reports.bench import run_bench
    from dno.reports.bench_report import markdown

    j = job("dno-bench", cfg)
    report = exit_codes("dno-bench", lambda: run_bench(cfg, j.dir, j.launch.choices))
    print(markdown(report))
    print(json.dumps({k: report[k] for k in ("machine",)}, default=str))


if __name__ == "__main__":
    main()
