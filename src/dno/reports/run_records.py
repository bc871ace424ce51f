"""Run records: what dno-tables reads of a run (its config, metrics, summary, provenance and final
annotations), from run directories (`find_runs`, `read_run`) or from W&B (`dno.runtime.tracking.pull_runs`).

Runs that differ only in `seed` (and in keys that cannot change results) share a `group`: one row
of dno-tables' comparison over seeds.
"""

from __future__ import annotations

import functools
import glob
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from dno.runtime.config import CONF_DIR
from dno.runtime.files import read_json, read_jsonl
from dno.runtime.layout import RunDir
from dno.stages.evaluate import first_responses, validation_lc
from dno.stages.records import Validation, read_rows


@dataclass
class RunRecord:
    name: str
    label: str
    judge: str
    summary: dict
    metrics: list[dict]
    init_length: float | None = None  # pi_1's average validation answer length (chars)
    path: Path | None = field(default=None, repr=False)
    provenance: dict = field(default_factory=dict)  # provenance.json (the W&B config's "provenance" online)
    seed: int | None = None
    group: str = ""  # runs that differ only in `seed` (and harmless keys) share it: one row of the tables

    def __post_init__(self) -> None:
        if not self.group:  # a run of unknown config is a row of its own
            self.group = self.name

    @functools.cached_property
    def annotations(self) -> list[dict] | None:
        """The final stage's per-prompt annotations (alpaca_eval's format), when the run has them (read once)."""
        path = RunDir(self.path).final.annotations if self.path else None
        return read_json(path) if path and path.exists() else None

    @functools.cached_property
    def mt_bench_ratings(self) -> dict[str, float] | None:
        """MT-Bench's valid ratings, "<question_id>/<turn>" -> 1..10, when the run was evaluated on it."""
        path = RunDir(self.path).final.benchmark("mt_bench").judgements if self.path else None
        if not path or not path.exists():
            return None
        return {f"{r['question_id']}/{r['turn']}": float(r["rating"]) for r in read_jsonl(path)
                if r.get("rating") is not None}

    @functools.cached_property
    def arena_hard_outcomes(self) -> dict[str, list[float]] | None:
        """Arena-Hard's outcomes of the headline category's prompts with both verdicts, uid -> the model's outcomes
        of its two games (dno.benchmarks.arena_hard.outcomes)."""
        from dno.benchmarks.arena_hard import outcomes

        path = RunDir(self.path).final.benchmark("arena_hard").judgements if self.path else None
        if not path or not path.exists():
            return None
        category = self.summary.get("arena_hard/score_category")
        weight = self.provenance.get("config", {}).get("eval", {}).get("arena_hard", {}).get("weight", 3)
        found = {}
        for r in read_jsonl(path):
            games = [outcomes(g["verdict"], g["model_is"], weight) if g.get("verdict") else None for g in r["games"]]
            if r["category"] == category and all(g is not None for g in games):
                found[r["uid"]] = [v for g in games for v in g]
        return found

    @functools.cached_property
    def iterates(self) -> dict[int, dict]:
        """dno-eval run_dir=RUN's benchmarks of each iterate: t -> pi_t's summary (empty when not evaluated)."""
        if not self.path:
            return {}
        run = RunDir(self.path)
        found = {t: run.iterate_final(t).summary for t in range(1, len(run.iterations()) + 2)}
        return {t: read_json(p) for t, p in found.items() if p.exists()}

    def get(self, key: str, default=None):
        """A summary value; runs recorded before the alpaca_eval/* keys used final/*."""
        if key in self.summary:
            return self.summary[key]
        return self.summary.get(key.replace("alpaca_eval/", "final/"), default)


def find_runs(runs) -> list[Path]:
    """Run directories (those with a metrics file) from a path, a glob, a comma-separated string or a list."""
    parts = [str(p) for p in runs] if not isinstance(runs, str) else runs.split(",")
    found: list[Path] = []
    for part in [p.strip() for p in parts if p.strip()]:
        for match in sorted(glob.glob(part)) or [part]:
            path = Path(match)
            if RunDir(path).metrics.exists():
                found.append(path)
            elif path.is_dir():
                found.extend(sorted((p for p in path.iterdir() if RunDir(p).metrics.exists()), key=_natural))
    if not found:
        raise FileNotFoundError(f"runs={runs}: no run directory (one with {RunDir(Path('.')).metrics.name}) found")
    return found


def _natural(path: Path):
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def read_run(path: Path) -> RunRecord:
    run = RunDir(path)
    cfg = OmegaConf.load(run.hydra_config) if run.hydra_config.exists() else {}
    overrides = OmegaConf.load(run.hydra_overrides) if run.hydra_overrides.exists() else []
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    summary = read_json(run.summary) if run.summary.exists() else {}
    metrics = read_jsonl(run.metrics)
    for m in metrics:  # runs recorded before eval/lc_win_rate_vs_init (and n_judged) were logged: from files
        if "eval/lc_win_rate_vs_init" not in m and "eval/n_judged" not in m and \
                run.iteration(m["iteration"]).eval_judgements.exists():
            m["eval/lc_win_rate_vs_init"] = _validation_lc_from_files(run, m["iteration"])
    judge = summary.get("alpaca_eval/annotator") or str(OmegaConf.select(cfg, "oracle._target_", default="?")
                                                           ).rsplit(".", 1)[-1]
    label = (OmegaConf.select(cfg, "method", default=None) or _experiment_method(experiment)
             or " ".join(o for o in overrides) or path.name)
    prov = read_json(run.provenance) if run.provenance.exists() else {}
    config = OmegaConf.to_container(cfg) if cfg else prov.get("config", {})
    init = run.init.val_samples
    return RunRecord(name=str(path), label=label, judge=judge, summary=summary, metrics=metrics, path=path,
                     provenance=prov, seed=config.get("seed"), group=seed_group(config, str(path)),
                     init_length=statistics.fmean(len(a) for a in first_responses(init)) if init.exists() else None)


def seed_group(config: dict, fallback: str) -> str:
    """A hash of the config without `seed` and the keys that cannot change results (see dno.runtime.provenance)."""
    from dno.runtime.provenance import config_sha256

    if not config:
        return fallback
    return config_sha256({k: v for k, v in config.items() if k not in ("seed", "hydra", "provenance")})


def _experiment_method(experiment: str | None) -> str | None:
    """The `method` an experiment config names (for runs recorded before configs carried it)."""
    path = Path(CONF_DIR) / "experiment" / f"{experiment}.yaml"
    return OmegaConf.load(path).get("method") or experiment if experiment and path.exists() else experiment


def _validation_lc_from_files(run: RunDir, t: int) -> float:
    vs_init = [r.vs_init for r in read_rows(run.iteration(t).eval_judgements, Validation)]
    return validation_lc(first_responses(run.init.val_samples), first_responses(run.iteration(t).eval_samples), vs_init)


def seed_rows(runs: list[RunRecord]) -> list[list[RunRecord]]:
    """Runs grouped into rows (same config but the seed), in the order of their first run."""
    rows: dict[str, list[RunRecord]] = {}
    for run in runs:
        rows.setdefault(run.group, []).append(run)
    return list(rows.values())


def row_label(row: list[RunRecord]) -> str:
    return re.sub(r"\s*\bseed=\S+", "", row[0].label).strip() or row[0].label
