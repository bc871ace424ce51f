"""dno-run: DNO-Prct (Algorithm 2 of arXiv 2404.03715) as configured, resumable (dno.loop).

    dno-run                                        # the offline default: SmolLM2-135M, rules oracle
    dno-run model=tiny_random schedule=smoke hydra.run.dir=/tmp/smoke
    dno-run -m model=tiny_random schedule=smoke seed=0,1
    dno-run -m hydra/sweeper=optuna search=dno hydra.sweeper.n_trials=12 hydra.sweep.dir=multirun/search
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes, groups_spelled_as_keys, job, trial_result
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> float | None:
    from dno.loop import train_dno
    from dno.run import Run, plan_run

    j = job("dno-run", cfg)
    if cfg.get("plan"):  # the priced plan only: nothing is sampled, judged or trained
        exit_codes("dno-run", lambda: plan_run(cfg, j.dir))
        return
    # a search trial returns its objective to the sweeper (hydra/sweeper=optuna); a plain run returns nothing
    return trial_result(cfg, j.dir, lambda: exit_codes("dno-run", lambda: train_dno(Run.build(cfg, j.dir, j.launch))))


def main() -> None:
    sys.argv[1:] = groups_spelled_as_keys(sys.argv[1:])  # generation.server=vllm_cpu: the group's option
    run()


if __name__ == "__main__":
    main()
