"""dno-report: a sweep as one W&B Report (dno.reports.wandb_report), offline as its specification, report.json.

    dno-report runs=multirun/table1_seeds/offline-default hydra.run.dir=results/table1_seeds/report
    dno-report runs=multirun/beta-sweep group_by=method                 # another grouping than what the sweep varied
    dno-report runs=multirun/table1_seeds/offline-default publish=true entity=my-team
    dno-report wandb=my-team/dno group=multirun/table1_seeds/offline-default publish=true
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from dno.apps import exit_codes
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.reports.wandb_report import make_report

    out = Path(HydraConfig.get().runtime.output_dir)
    print(json.dumps(exit_codes("dno-report", lambda: make_report(cfg, out)), indent=1))


if __name__ == "__main__":
    main()
