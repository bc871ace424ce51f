"""dno-eval: a model's answers evaluated by `eval=`, as dno-run's final stage (dno.loop.evaluate_checkpoint).

    dno-eval checkpoint=outputs/demo/iter_3/checkpoint                # eval=local (offline)
    dno-eval eval=alpaca_eval2 checkpoint=PATH                        # AlpacaEval 2.0, GPT-4-Turbo annotator
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from dno.apps import exit_codes, job
from dno.loop import evaluate_checkpoint
from dno.runtime.config import CONF_DIR


@hydra.main(config_path=CONF_DIR, config_name="eval_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    j = job()
    summary = exit_codes("dno-eval", lambda: evaluate_checkpoint(cfg, j.dir, group=j.group, name=j.name,
                                                                 loss_choice=j.choices.get("loss", "?")))
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
