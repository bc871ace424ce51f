"""dno-export: a run's per-iteration pairs and samples as a Hugging Face dataset (dno.reports.export).

    dno-export run=outputs/demo out=exports/demo                  # save_to_disk + Parquet + dataset card
    dno-export run=outputs/demo out=exports/demo hub=ORG/NAME     # and upload to the hub
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.reports.export import export_run

    counts = exit_codes("dno-export", lambda: export_run(Path(cfg.run), Path(cfg.out), hub=cfg.hub,
                                                         private=cfg.private))
    for name, splits in counts.items():
        print(f"{name}: " + ", ".join(f"{split} {n} rows" for split, n in splits.items()) + f" -> {cfg.out}/{name}")


if __name__ == "__main__":
    main()
