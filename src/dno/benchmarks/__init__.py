"""The final stage's benchmarks: a model's answers evaluated against a baseline, each benchmark a
resumable stage of its own."""

from omegaconf import OmegaConf

from dno.benchmarks.alpaca_eval2 import AlpacaEval2
from dno.benchmarks.local import LocalBenchmark

BENCHMARKS = {"local": LocalBenchmark, "alpaca_eval2": AlpacaEval2}


def benchmark(eval_cfg):
    """The benchmark `eval=` chooses (`eval.name`), with its options."""
    options = OmegaConf.to_container(eval_cfg, resolve=True)
    name = options.pop("name")
    if name not in BENCHMARKS:
        raise ValueError(f"eval.name must be one of {', '.join(BENCHMARKS)}, got {name!r}")
    try:
        return BENCHMARKS[name](**options)
    except TypeError as e:
        raise ValueError(f"eval={name}: {e}") from None
