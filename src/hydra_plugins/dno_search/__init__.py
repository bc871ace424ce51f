"""dno's Hydra plugins: `hydra/sweeper=optuna`, a search sweep on Optuna's ask-and-tell (optuna_sweeper.py).

Hydra finds a plugin only in the `hydra_plugins` namespace package, so the sweeper's Hydra side lives here and its
library (the space, the study, the objective) in `dno.runtime.search`.
"""
