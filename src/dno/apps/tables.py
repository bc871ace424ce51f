"""dno-tables: the paper's tables and plots from runs, beside the published numbers (dno.reports.tables).

    dno-tables runs=multirun/table1/offline-default out=results
    dno-tables runs='outputs/*' out=/tmp/tables
    dno-tables wandb=ENTITY/PROJECT group=GROUP out=results     # online: runs through the W&B API
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="tables", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.reports.tables import PAPER_DIR, write_tables_of

    paper = Path(cfg.paper_dir) if cfg.paper_dir else PAPER_DIR
    stats = {"compare_to": cfg.compare_to, **cfg.bootstrap}
    for path in exit_codes("dno-tables", lambda: write_tables_of(cfg.runs, cfg.wandb, cfg.group, Path(cfg.out), paper,
                                                                 stats)):
        print(path)


if __name__ == "__main__":
    main()
