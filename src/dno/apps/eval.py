"""dno-eval: a model on the benchmarks of `eval=[...]`, as dno-run's final stage (dno.final).

    dno-eval checkpoint=outputs/demo/iter_3/checkpoint                # eval=local (offline), the run's model
    dno-eval eval=[alpaca_eval2,mt_bench] checkpoint=PATH             # AlpacaEval 2.0 and MT-Bench, GPT-4 judges
    dno-eval run_dir=outputs/demo eval=[mt_bench]                     # every iterate of a finished run
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes, job
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="eval_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.final import evaluate_checkpoint

    j = job("dno-eval", cfg)
    summary = exit_codes("dno-eval", lambda: evaluate_checkpoint(cfg, j.dir, j.launch))
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
