"""The final stage: a policy on every benchmark of `eval=[...]` (dno-run's last stage, and dno-eval).

    final_stage(run, label, policy)       dno-run: the best iterate, into <run_dir>/final/<benchmark>/
    evaluate_checkpoint(cfg, out)         dno-eval checkpoint=DIR (or the configured model) into <out>/final/; a
                                          checkpoint of a run (RUN/iter_<t>/checkpoint) with the run's model
    evaluate_iterates(cfg, out)           dno-eval run_dir=RUN: pi_1..pi_{T+1} of a finished run, each into its
                                          iteration's final/ (Table 3 and Table 4 have a row per iterate)

Each benchmark is its own resumable stage in its own folder, so a kill during one redoes neither the
benchmarks before it nor the answers it had judged (its judge's answers are cached). Its summary keys
(`alpaca_eval/*`, `mt_bench/*`, `arena_hard/*`, ...) go into the run's summary and W&B summary; its string
values (data source, revision, judge, prompt versions) into provenance.json under `benchmarks`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from dno.benchmarks.base import Evaluated
from dno.benchmarks.local import LocalBenchmark
from dno.oracles.ledger import cost_metrics, read_ledger
from dno.run import Run
from dno.runtime import provenance
from dno.runtime.config import ConfigError, upgrade_config
from dno.runtime.files import read_json, write_json
from dno.runtime.layout import FinalDir, RunDir
from dno.runtime.tracking import Launch, override_values
from dno.stages.sample import sample_responses

log = logging.getLogger(__name__)


def run_benchmarks(run: Run, target: Evaluated, final: FinalDir) -> dict:
    """Every benchmark of the run on `target`, into `final`; their summaries merged (and recorded)."""
    summary, identities = {}, {}
    for name, benchmark in run.benchmarks.items():
        if name in ("local", "alpaca_eval2"):
            final.adopt_flat_layout(name)  # a run directory made before benchmarks had folders
        result = benchmark.run(target, final.benchmark(name))
        summary |= result
        identities[name] = {k: v for k, v in result.items() if isinstance(v, str)}
        log_answers(run.tracker, final.benchmark(name).annotations, name)
    provenance.add_benchmarks(run.run_dir, identities)
    return summary


def final_stage(run: Run, label: str, policy: Path | None) -> dict:
    """`policy` (None: pi_1 itself) on every benchmark into the run's final/."""
    target = Evaluated(lambda: run.policies.get(policy), run.tokenizer, run.sampling, run.cfg.seed,
                       f"{run.cfg.model.name}-dno-{label}", policy is None, run.splits.test,
                       run.dir.init.test_samples, run.oracle, policy)
    return run_benchmarks(run, target, run.dir.final)


def log_answers(tracker, annotations: Path, name: str) -> None:
    """A benchmark's answers beside the baseline's, with the judge's preference, as a W&B Table."""
    if annotations.exists():
        key = "eval/answers" if name in ("local", "alpaca_eval2") else f"{name}/answers"
        tracker.table(key, [{k: a.get(k) for k in ("instruction", "generator_1", "output_1", "generator_2",
                                                   "output_2", "preference")} for a in read_json(annotations)])


def baseline_answers(run: Run, final: FinalDir) -> Path:
    """dno-eval: pi_1's test answers, drawn as dno-run's init/ answers are, when a benchmark compares with them."""
    d = final.benchmark("local")
    if isinstance(run.benchmarks.get("local"), LocalBenchmark):
        run.stage(d, "baseline", lambda: sample_responses(run.sampler(None), run.splits.test, d.baseline_samples,
                                                          k=1, seed=run.seed(0, "test"), desc="pi_1 test"),
                  (d.baseline_samples,), everyone=True)
    return d.baseline_samples


def run_of(checkpoint: Path) -> RunDir | None:
    """The dno-run directory whose iteration holds `checkpoint` (RUN/iter_<t>/checkpoint, RUN with its Hydra
    config), else None (a checkpoint of one's own)."""
    path = checkpoint.resolve()
    run = RunDir(path.parent.parent)
    if not run.hydra_config.exists():
        return None
    return run if any(run.iteration(t).checkpoint.resolve() == path for t in run.iterations()) else None


def with_run_model(cfg: DictConfig, checkpoint: Path, overrides: tuple[str, ...]) -> DictConfig:
    """dno-eval checkpoint=RUN/iter_<t>/checkpoint: `cfg` with the model the run recorded (its weights' family,
    tokenizer, dtype, LoRA), this command's `model.<key>=` overrides on top; a `model=` on the command line that
    names another model is a ConfigError naming both. A checkpoint outside a run: `cfg` as it is."""
    run = run_of(checkpoint)
    if run is None:
        return cfg
    model = upgrade_config(OmegaConf.load(run.hydra_config)).model
    given = override_values(overrides)
    for key in given:
        if key.startswith("model."):
            OmegaConf.update(model, key.removeprefix("model."), OmegaConf.select(cfg, key), merge=False)
    ours, theirs = (OmegaConf.to_container(m) for m in (model, cfg.model))
    differ = [k for k in ours if k in theirs and ours[k] != theirs[k]]
    if "model" in given and differ:
        raise ConfigError(
            f"checkpoint={checkpoint} was trained in the run {run.path} from the model {model.name} (its "
            f"{run.hydra_config}), but model={given['model']} is {cfg.model.name}: "
            + ", ".join(f"model.{k} is {ours[k]!r} in the run, {theirs[k]!r} here" for k in differ)
            + ". Leave model= out: the checkpoint's run gives the model")
    with open_dict(cfg):
        cfg.model = model
    return cfg


def evaluate_checkpoint(cfg: DictConfig, out: Path, launch: Launch | None = None) -> dict:
    """dno-eval: the benchmarks alone, on `cfg.checkpoint` (null: the configured model itself), into `out`;
    a checkpoint of a dno-run with that run's model (`with_run_model`); with `cfg.run_dir`, on every iterate of
    that finished run instead (`evaluate_iterates`)."""
    if cfg.get("run_dir"):
        return evaluate_iterates(cfg, out, launch)
    if cfg.checkpoint and not Path(cfg.checkpoint).exists():
        raise ConfigError(f"checkpoint={cfg.checkpoint} does not exist")
    launch = launch or Launch(job_type="dno-eval")
    if cfg.checkpoint:
        cfg = with_run_model(cfg, Path(cfg.checkpoint), launch.overrides)
    run = Run.build(cfg, out, launch)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    final = run.dir.final
    generator = cfg.get("name") or f"{cfg.model.name}-{ckpt.parent.name if ckpt else 'init'}"
    target = Evaluated(lambda: run.policies.get(ckpt), run.tokenizer, run.sampling, cfg.seed, generator,
                       ckpt is None, run.splits.test, baseline_answers(run, final), run.oracle, ckpt)
    summary = run_benchmarks(run, target, final) | cost_metrics(read_ledger(run.dir.ledger))
    run.tracker.summary(summary)
    run.tracker.finish()
    return summary


def recorded_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """dno-eval run_dir=RUN: the run's own config (its model, data, oracle, sampling, seeds), with this command's
    benchmarks and logger."""
    run = RunDir(run_dir)
    if not run.hydra_config.exists() or not run.summary.exists():
        raise ConfigError(f"run_dir={run_dir}: not a finished dno-run directory (no Hydra config or summary)")
    recorded = upgrade_config(OmegaConf.load(run.hydra_config))
    with open_dict(recorded):
        for key in ("eval", "logger", "resume", "cache_dir", "run_dir", "checkpoint", "name"):
            if key in cfg:
                recorded[key] = cfg[key]
    return recorded


def iterates(run: RunDir, cfg: DictConfig) -> list[tuple[int, Path | None]]:
    """(t, checkpoint) of pi_1..pi_{T+1} (None: pi_1), those whose checkpoint exists."""
    found = [(1, None)]
    for t in range(1, cfg.schedule.iterations + 1):
        if run.iteration(t).checkpoint.exists():
            found.append((t + 1, run.iteration(t).checkpoint))
    return found


def evaluate_iterates(cfg: DictConfig, out: Path, launch: Launch | None = None) -> dict:
    """Every iterate of the finished run `cfg.run_dir` on the benchmarks, each into its iteration's final/; the
    metrics logged with `iteration` t - 1 for pi_t (pi_1 is 0, as the paper's tables count), the summary keys
    prefixed `pi_<t>/`."""
    from dno.runtime.lock import acquire

    source = RunDir(Path(cfg.run_dir))
    acquire(source.path)  # the run's own folders are written: its owner must not be running
    cfg = recorded_config(cfg, source.path)
    run = Run.build(cfg, out, launch or Launch(job_type="dno-eval"))
    baseline = source.init.test_samples
    summary = {}
    for t, checkpoint in iterates(source, cfg):
        target = Evaluated(lambda c=checkpoint: run.policies.get(c), run.tokenizer, run.sampling, cfg.seed,
                           f"{cfg.model.name}-pi_{t}", checkpoint is None, run.splits.test, baseline, run.oracle,
                           checkpoint)
        final = source.iterate_final(t)
        metrics = run_benchmarks(run, target, final)
        write_json(final.summary, metrics)
        run.tracker.log(metrics, t - 1)
        summary |= {f"pi_{t}/{k}": v for k, v in metrics.items()}
    summary |= cost_metrics(read_ledger(run.dir.ledger))
    run.tracker.summary(summary)
    run.tracker.finish()
    return summary


def headline(summary: dict) -> list[str]:
    """One line per benchmark of a summary, for the end of dno-run's output."""
    lines = []
    if "alpaca_eval/win_rate" in summary:
        lines.append(f"AlpacaEval-style (vs {summary['alpaca_eval/baseline']}, n={summary['alpaca_eval/n_total']}, "
                     f"judge {summary['alpaca_eval/annotator']}): win-rate {summary['alpaca_eval/win_rate']:.1f}, "
                     f"LC win-rate {summary['alpaca_eval/lc_win_rate']:.1f}, "
                     f"length {summary['alpaca_eval/avg_length']:.0f} chars")
    if "mt_bench/avg" in summary:
        lines.append(f"MT-Bench (judge {summary['mt_bench/judge']}, {summary['mt_bench/n_valid']} of "
                     f"{summary['mt_bench/n_total']} ratings valid): turn 1 {summary['mt_bench/turn1']:.2f}, "
                     f"turn 2 {summary['mt_bench/turn2']:.2f}, average {summary['mt_bench/avg']:.2f}")
    if "open_llm/avg" in summary:
        tasks = [k.split("/", 1)[1] for k in summary if k.startswith("open_llm/") and isinstance(summary[k], float)
                 and k != "open_llm/avg"]
        lines.append("Open LLM Leaderboard (lm-eval " + str(summary.get("open_llm/lm_eval_version")) + "): " +
                     ", ".join(f"{t} {summary['open_llm/' + t]:.3f}" for t in tasks) +
                     f"; average {summary['open_llm/avg']:.3f}")
    if "arena_hard/score" in summary:
        lines.append(f"Arena-Hard-Auto (judge {summary['arena_hard/judge']}): score {summary['arena_hard/score']:.1f} "
                     f"[{summary['arena_hard/ci_low']:.1f}, {summary['arena_hard/ci_high']:.1f}]")
    return lines
