"""A search sweep's library: Hydra's sweep syntax as Optuna distributions, a trial's overrides, the study in the
sweep directory, the objective of a finished run, and the study's trials as rows. The sweeper that launches the
trials through Hydra's launcher is `hydra_plugins.dno_search.optuna_sweeper` (Hydra finds plugins only there).

    dno-run -m hydra/sweeper=optuna search=dno hydra.sweeper.n_trials=12 hydra.sweep.dir=multirun/search

The sweep directory holds the study (`study.db`, Optuna's RDB storage on SQLite) and one job directory per trial,
named by its trial number; docs/guides/search.md says why the sweeper is built on current Optuna's ask-and-tell
rather than hydra-optuna-sweeper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from dno.runtime.config import ConfigError
from dno.runtime.files import read_json, read_jsonl

STUDY_FILE = "study.db"  # in the sweep directory
DEFAULT_OBJECTIVE = "eval/lc_win_rate_vs_init"  # the best iterate's validation LC win-rate against pi_1
FIRST_ITERATE = {"eval/win_rate_vs_init": 50.0, "eval/lc_win_rate_vs_init": 50.0}  # pi_1 against itself
TRIAL_KEY, PARAMS_KEY = "search.trial", "search.params"  # what each trial's config records (the sweeper sets them)


@dataclass(frozen=True)
class Dimension:
    """One knob of a search space: its config key, its spec as written (`tag(log, interval(0.02, 0.5))`) and
    Optuna's distribution of it."""

    key: str
    spec: str
    distribution: object  # optuna.distributions.BaseDistribution

    def extremes(self) -> list:
        """The values a range check composes: both ends of an interval or range, every choice."""
        d = self.distribution
        return list(d.choices) if hasattr(d, "choices") else [d.low, d.high]


def distribution(override):
    """Optuna's distribution of one of Hydra's sweep overrides, as hydra-optuna-sweeper maps them: choice (and
    `a,b,c`) is categorical (a list or dict choice as its override text), interval is uniform (integers with
    `int(interval(a, b))`, both ends included; `tag(log, ...)` log-uniform), range is integers start..stop-step as
    Hydra's own range means (the plugin includes stop)."""
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and not all(
            isinstance(v, int) for v in (value.start, value.stop, value.step))):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        last = value.start + (len(range(value.start, value.stop, value.step)) - 1) * value.step
        return IntDistribution(value.start, last, step=value.step)
    log = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log)
    return FloatDistribution(float(value.start), float(value.end), log=log)


def parse_space(arguments: list[str]) -> tuple[dict[str, Dimension], list[str]]:
    """`key=spec` lines (hydra.sweeper.params, then the command line's) as the search space's dimensions and the
    overrides every trial gets as they are; a later line for the same key replaces an earlier one. A range Optuna
    cannot draw from (an empty one, a log scale reaching 0) is a ConfigError naming the key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    space: dict[str, Dimension] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if not override.is_sweep_override():
            fixed[key] = override.input_line
            continue
        spec = override.input_line.split("=", 1)[1]
        try:
            space[key] = Dimension(key, spec, distribution(override))
        except ValueError as e:
            raise ConfigError(f"search space: {key}={spec}: {e}") from None
    return space, list(fixed.values())


def override(key: str, value) -> str:
    """A parameter's value as a command-line override, as hydra-optuna-sweeper writes it."""
    return f"{key}={value}"


def trial_overrides(number: int, params: dict) -> list[str]:
    """What a trial adds to the sweep's fixed overrides: its parameters at their keys, and its number and parameters
    under `search` (the job's config, W&B's config and the report read them there; `++` adds `search` where no
    search= config is chosen)."""
    inline = ",".join(f"{k}:{v}" for k, v in params.items())
    return [*(override(k, v) for k, v in params.items()), f"++{TRIAL_KEY}={number}", f"++{PARAMS_KEY}={{{inline}}}"]


def study_storage(sweep_dir: Path, storage: str | None) -> str:
    """Optuna's storage URL: `storage` as given, else the SQLite file in the sweep directory (made first: Optuna
    does not create the folder)."""
    if storage:
        return storage
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(sweep_dir).resolve() / STUDY_FILE}"


def objective_value(run_dir: Path, key: str, summary: dict | None = None) -> float | None:
    """A finished run's objective: `key` of its summary (a final benchmark's `alpaca_eval/lc_win_rate`, ...), else
    the per-iteration metric `key` of the iterate the run chose on validation (`final/best_iteration`; pi_1, chosen
    when no iterate beat it, is 50 against itself; DNO-Lookahead's model: its `lookahead/` key); None where the run
    has no such value. `summary`: the run's (else read from its summary file)."""
    from dno.runtime.layout import RunDir

    run = RunDir(run_dir)
    if summary is None:
        summary = read_json(run.summary) if run.summary.exists() else {}
    value = summary.get(key)
    if value is None and summary.get("final/model") == "lookahead":  # DNO-Lookahead's model is no iterate
        value = summary.get(key.replace("eval/", "lookahead/", 1))
    elif value is None and "final/best_iteration" in summary:
        best = summary["final/best_iteration"]
        if best == 0:
            value = FIRST_ITERATE.get(key)
        elif run.metrics.exists():
            value = next((m.get(key) for m in read_jsonl(run.metrics) if m["iteration"] == best), None)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def trial_rows(study) -> list[dict]:
    """The study's trials as rows (number, state, value, parameters, error), best first, unfinished and failed
    trials last in order of number; `study`: an optuna Study (maximised or minimised)."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    rows = [{"trial": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params),
             "error": t.user_attrs.get("error")} for t in study.trials]
    return sorted(rows, key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0), r["trial"]))


def load_study(sweep_dir: Path, storage: str | None = None, name: str | None = None):
    """The study of a search sweep (its SQLite file), None where the directory has none."""
    import optuna

    if not storage and not (Path(sweep_dir) / STUDY_FILE).exists():
        return None
    url = study_storage(sweep_dir, storage)
    names = optuna.get_all_study_names(url)
    if not names:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name or names[0], storage=url)
