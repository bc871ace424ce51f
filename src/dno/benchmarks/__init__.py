"""The final stage's benchmarks: a model's answers evaluated against a baseline, each benchmark a resumable
stage of its own in final/<name>/ (dno.runtime.layout.BenchmarkDir).

`eval=[local,mt_bench]` composes the benchmarks of conf/eval/ as a list (Hydra's idiom for several configs of
one group); each file puts its options under its own name (`eval.mt_bench.judge_model`) with a `_target_`
here: `local.LocalBenchmark`, `alpaca_eval2.AlpacaEval2`, `mt_bench.MTBench`, `arena_hard.ArenaHard`,
`open_llm.OpenLLM`.
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate

# benchmarks whose summary keys are the same (alpaca_eval/*): one of them per run
SAME_KEYS = ({"local", "alpaca_eval2"},)


def benchmarks(eval_cfg, check: bool = True) -> dict:
    """The benchmarks `eval=[...]` lists, by name, in its order, each checked unless `check` is False (ValueError
    names the key)."""
    if not eval_cfg:
        raise ValueError("eval=[] names no benchmark: give at least one, e.g. eval=[local]")
    for same in SAME_KEYS:
        if same <= set(eval_cfg):
            raise ValueError(f"eval=[{','.join(eval_cfg)}]: {' and '.join(sorted(same))} both report alpaca_eval/*; "
                             "choose one of them per run (dno-eval evaluates a checkpoint with the other)")
    built = {}
    for name, node in eval_cfg.items():
        try:
            built[name] = instantiate(node)
        except InstantiationException as e:
            raise ValueError(f"eval.{name}: {str(e).splitlines()[-1]}") from None
        if check:
            built[name].check()
    return built
