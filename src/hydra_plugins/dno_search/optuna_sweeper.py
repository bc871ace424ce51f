"""`hydra/sweeper=optuna`: a Hydra Sweeper that searches with current Optuna's ask-and-tell, resumably.

    dno-run -m hydra/sweeper=optuna search=dno hydra.sweeper.n_trials=12 hydra.sweep.dir=multirun/search

Its config (conf/hydra/sweeper/optuna.yaml) has hydra-optuna-sweeper's shape: `params` (Hydra's sweep syntax:
interval, tag(log, ...), choice, range), `n_trials`, `direction`, `sampler`, `storage`, `study_name`, `n_jobs`;
a command-line sweep (`loss.beta='interval(0.05, 0.2)'`) adds a dimension as there. What differs, and why
(docs/guides/search.md):

1. The study lives in the sweep directory (`study.db`, SQLite) unless `storage` names another; `n_trials` is the
   study's total, so the same command after a kill runs only the trials still missing: a trial the kill left
   running is run again with its own parameters in its own job directory (the run resumes its finished stages),
   a finished or failed one is not.
2. Job directories are named by trial number (`<sweep>/<trial>/`), also across invocations.
3. Before any trial: every key of the space is composed at both ends of its range (every choice) with the run's
   own checks (dno.runtime.config.validate, the variant's), so that a key that does not exist or a range outside
   a knob's valid values (loss.beta <= 0, K < 2) stops the sweep (exit 2) naming it.
4. A trial that fails (its run exits 2 or 3, or raises) is told to the study as failed and the sweep goes on;
   SIGTERM or Ctrl-C (exit 4) stops the sweep, which the same command resumes.
5. Each trial's config has `search.trial` and `search.params` (W&B's config, dno-report's table).
Jobs go through Hydra's launcher (basic, submitit_local, submitit_slurm): `n_jobs` trials per launch.
"""

# no `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, where a
# dataclass with string annotations looks itself up
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    """conf/hydra/sweeper/optuna.yaml's keys (its comments say what each does)."""

    sampler: Any = None
    direction: str = "maximize"
    storage: str | None = None
    study_name: str | None = None
    n_trials: int = 12
    n_jobs: int = 1
    params: dict | None = None
    enqueue_trials: list = field(default_factory=list)


class OptunaSearchSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        self.settings = SearchSettings(**settings)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> dict:
        from dno.runtime.config import ConfigError

        try:
            study, space, fixed = self.open(arguments)
        except ConfigError as e:  # before any trial: the command's fault, as an app's bad config (exit 2)
            print(f"dno-run: config error: {e}", file=sys.stderr)
            sys.exit(2)
        running = [t.number for t in study.trials if t.state.name == "RUNNING"]
        if running:
            log.info("resuming trial(s) %s, left running by an earlier start", ", ".join(map(str, running)))
        for batch in consecutive(running, self.settings.n_jobs):
            self.run_batch(study, [(n, study.trials[n].params) for n in batch], fixed)
        distributions = {k: d.distribution for k, d in space.items()}
        while (done := started(study)) < self.settings.n_trials:
            trials = [study.ask(distributions) for _ in range(min(self.settings.n_jobs, self.settings.n_trials - done))]
            self.run_batch(study, [(t.number, t.params) for t in trials], fixed)
        return self.results(study)

    def open(self, arguments: list[str]):
        """The space and fixed overrides, checked; the sweep directory locked; the study created or loaded."""
        import optuna

        from dno.runtime import search
        from dno.runtime.config import ConfigError
        from dno.runtime.lock import acquire

        s = self.settings
        specs = [search.override(k, v) for k, v in (s.params or {}).items()]
        space, fixed = search.parse_space(specs + list(arguments))
        if not space:
            raise ConfigError("hydra/sweeper=optuna: no search space: choose one (search=dno) or give "
                              "hydra.sweeper.params, or a sweep on the command line (loss.beta='interval(0.05,0.2)')")
        self.check_space(space, fixed)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        acquire(sweep_dir)  # one sweeper per sweep directory (its trials each lock their own run directory)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(storage=search.study_storage(sweep_dir, s.storage), sampler=optuna.samplers.
                                    RandomSampler(), study_name=s.study_name or "search", direction=s.direction,
                                    load_if_exists=True)
        study.sampler = sampler_for(s.sampler, len(study.trials))
        recorded = {"space": {k: d.spec for k, d in space.items()},
                    "objective": OmegaConf.select(self.config, "search.objective", default=search.DEFAULT_OBJECTIVE)}
        if study.trials and {k: study.user_attrs.get(k) for k in recorded} != recorded:
            raise ConfigError(f"{sweep_dir}: its study searched {study.user_attrs} with {len(study.trials)} trial(s); "
                              f"this command searches {recorded}: give a new hydra.sweep.dir for a new search")
        if not study.trials:
            for key, value in recorded.items():
                study.set_user_attr(key, value)
            for params in s.enqueue_trials:
                study.enqueue_trial(OmegaConf.to_container(params) if isinstance(params, DictConfig) else params)
        log.info("study %s in %s: %d of %d trials started", study.study_name, sweep_dir, started(study), s.n_trials)
        return study, space, fixed

    def check_space(self, space: dict, fixed: list[str]) -> None:
        """Every dimension composed at each end of its range (each choice), the others as configured, and checked
        as a run checks its config before any compute (dno.runtime.config.validate, the variant's own checks)."""
        from hydra.errors import HydraException
        from hydra.utils import instantiate

        from dno.runtime.config import ConfigError, validate
        from dno.runtime.search import override

        for key, dim in space.items():
            for value in dim.extremes():
                try:
                    cfg = self.hydra_context.config_loader.load_sweep_config(self.config, [*fixed,
                                                                                           override(key, value)])
                    with open_dict(cfg):
                        del cfg["hydra"]  # the job's config, as the app gets it
                    validate(cfg)
                    if "loss" in cfg:
                        instantiate(cfg.loss)
                except (HydraException, ConfigError, ValueError) as e:
                    raise ConfigError(f"search space: {key}={dim.spec} at {key}={value}: {reason(e)}") from None

    def run_batch(self, study, trials: list[tuple[int, dict]], fixed: list[str]) -> None:
        """Trials with consecutive numbers through the launcher (job directory = trial number); each told to the
        study as complete (the job's return value) or failed."""
        from dno.runtime.search import trial_overrides

        batch = [[*fixed, *trial_overrides(number, params)] for number, params in trials]
        try:
            returns = self.launcher.launch(batch, initial_job_idx=trials[0][0])
        except Exception as e:  # noqa: BLE001 - a launcher's failure (a SLURM job that died): these trials failed
            returns = [e] * len(trials)
        for (number, _), ret in zip(trials, returns, strict=True):
            tell(study, number, ret)

    def results(self, study) -> dict:
        """optimization_results.yaml in the sweep directory, as hydra-optuna-sweeper writes it (best parameters and
        value), with the count of trials per state."""
        states = [t.state.name for t in study.trials]
        done = [t for t in study.trials if t.state.name == "COMPLETE"]
        best = study.best_trial if done else None
        out = {"name": "optuna", "best_params": dict(best.params) if best else None,
               "best_value": best.value if best else None, "best_trial": best.number if best else None,
               "trials": {s: states.count(s) for s in sorted(set(states))}}
        OmegaConf.save(OmegaConf.create(out), Path(self.config.hydra.sweep.dir) / "optimization_results.yaml")
        log.info("best trial %s: %s = %s", out["best_trial"], out["best_params"], out["best_value"])
        return out


def reason(e: Exception) -> str:
    """An error's message on one line: the check's own (a variant's ValueError inside Hydra's instantiation error),
    without Hydra's full_key and object_type lines."""
    cause = e.__cause__ if isinstance(e.__cause__, ValueError) else e  # dno's ConfigError is a ValueError
    lines = [line.strip() for line in str(cause).splitlines()]
    return " ".join(line for line in lines if line and not line.startswith(("full_key", "object_type")))


def sampler_for(sampler, existing: int):
    """The configured sampler; its seed moved on by the trials the study already has, so that a resumed sweep's
    random draws are not the first start's again (a seeded sampler restarts its random state with the process)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from dno.runtime.config import ConfigError

    if not isinstance(sampler, DictConfig | dict):
        return sampler
    seed = sampler.get("seed")
    try:
        return instantiate(sampler, **({"seed": seed + existing} if seed is not None and existing else {}))
    except InstantiationException as e:  # a key the sampler does not take, a sampler that does not exist
        raise ConfigError(f"hydra.sweeper.sampler ({sampler.get('_target_')}): {reason(e)}") from None


def tell(study, number: int, ret: JobReturn | Exception) -> None:
    """A launched trial's outcome to the study: its return value (a float), else failed with the error."""
    import optuna

    try:
        if isinstance(ret, Exception):
            raise ret
        value = float(ret.return_value)
    except Exception as e:  # noqa: BLE001 - any failure of a trial is the trial's, recorded, and the sweep goes on
        error = f"{type(e).__name__}: {e}"
        optuna.trial.Trial(study, study.trials[number]._trial_id).set_user_attr("error", error[:2000])
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        log.warning("trial %d failed: %s", number, error.splitlines()[0] if error else "")
        return
    study.tell(number, value)
    log.info("trial %d: %s", number, value)


def started(study) -> int:
    """The study's trials that were asked for (enqueued points waiting for their turn are not)."""
    return sum(t.state.name != "WAITING" for t in study.trials)


def consecutive(numbers: list[int], size: int) -> list[list[int]]:
    """`numbers` (ascending) in batches of at most `size` consecutive numbers (a launch numbers its jobs from one
    start)."""
    batches: list[list[int]] = []
    for n in numbers:
        if batches and n == batches[-1][-1] + 1 and len(batches[-1]) < max(size, 1):
            batches[-1].append(n)
        else:
            batches.append([n])
    return batches
