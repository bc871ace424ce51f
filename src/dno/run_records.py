"""Run records: what dno-tables reads of a run (its config, metrics, summary, provenance and final
annotations), from run directories (`find_runs`, `read_run`) or from W&B (`dno.tracking.pull_runs`).

Runs that differ only in `seed` (and in keys that cannot change results) share a `group`: one row
of dno-tables' comparison over seeds.
"""

from __future__ import annotations

import functools
import glob
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from dno.config import CONF_DIR
from dno.records import read_json, read_jsonl


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
    group: str = ""  # runs that differ only in `seed` (and harmless keys) share it: one row of comparison.md

    @functools.cached_property
    def annotations(self) -> list[dict] | None:
        """The final stage's per-prompt annotations (alpaca_eval's format), when the run has them (read once)."""
        path = self.path / "final" / "annotations.json" if self.path else None
        return read_json(path) if path and path.exists() else None

    def get(self, key: str, default=None):
        """A summary value; runs recorded before the alpaca_eval/* keys used final/*."""
        if key in self.summary:
            return self.summary[key]
        return self.summary.get(key.replace("alpaca_eval/", "final/"), default)


def find_runs(runs) -> list[Path]:
    """Run directories from a path, a glob, a comma-separated string or a list of these."""
    parts = [str(p) for p in runs] if not isinstance(runs, str) else runs.split(",")
    found: list[Path] = []
    for part in [p.strip() for p in parts if p.strip()]:
        for match in sorted(glob.glob(part)) or [part]:
            path = Path(match)
            if (path / "metrics.jsonl").exists():
                found.append(path)
            elif path.is_dir():
                found.extend(sorted((p.parent for p in path.glob("*/metrics.jsonl")), key=_natural))
    if not found:
        raise FileNotFoundError(f"runs={runs}: no run directory (one with metrics.jsonl) found")
    return found


def _natural(path: Path):
    return (0, int(path.name)) if path.name.isdigit() else (1, path.name)


def read_run(path: Path) -> RunRecord:
    cfg = OmegaConf.load(path / ".hydra" / "config.yaml") if (path / ".hydra" / "config.yaml").exists() else {}
    overrides = OmegaConf.load(path / ".hydra" / "overrides.yaml") if (path / ".hydra" / "overrides.yaml").exists() \
        else []
    experiment = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), None)
    summary = read_json(path / "summary.json") if (path / "summary.json").exists() else {}
    metrics = read_jsonl(path / "metrics.jsonl")
    for m in metrics:  # runs recorded before eval/lc_win_rate_vs_init (and n_judged) were logged: from files
        judgements = path / f"iter_{m['iteration']}" / "eval_judgements.jsonl"
        if "eval/lc_win_rate_vs_init" not in m and "eval/n_judged" not in m and judgements.exists():
            m["eval/lc_win_rate_vs_init"] = _validation_lc_from_files(path, m["iteration"])
    init = path / "init" / "val_samples.jsonl"
    judge = summary.get("alpaca_eval/annotator") or str(OmegaConf.select(cfg, "oracle._target_", default="?")
                                                           ).rsplit(".", 1)[-1]
    label = (OmegaConf.select(cfg, "method", default=None) or _experiment_method(experiment)
             or " ".join(o for o in overrides) or path.name)
    prov = read_json(path / "provenance.json") if (path / "provenance.json").exists() else {}
    config = OmegaConf.to_container(cfg) if cfg else prov.get("config", {})
    return RunRecord(name=str(path), label=label, judge=judge, summary=summary, metrics=metrics, path=path,
                     provenance=prov, seed=config.get("seed"), group=seed_group(config, str(path)),
                     init_length=statistics.fmean(len(r["responses"][0]) for r in read_jsonl(init))
                     if init.exists() else None)


def seed_group(config: dict, fallback: str) -> str:
    """A hash of the config without `seed` and the keys that cannot change results (see dno.provenance)."""
    from dno.provenance import config_sha256

    if not config:
        return fallback
    return config_sha256({k: v for k, v in config.items() if k not in ("seed", "hydra")})


def _experiment_method(experiment: str | None) -> str | None:
    """The `method` an experiment config names (for runs recorded before configs carried it)."""
    path = Path(CONF_DIR) / "experiment" / f"{experiment}.yaml"
    return OmegaConf.load(path).get("method") or experiment if experiment and path.exists() else experiment


def _validation_lc_from_files(path: Path, t: int) -> float:
    from dno.stages.evaluate import first_responses, validation_lc

    vs_init = [r["vs_init"] for r in read_jsonl(path / f"iter_{t}" / "eval_judgements.jsonl")]
    return validation_lc(first_responses(path / "init" / "val_samples.jsonl"),
                         first_responses(path / f"iter_{t}" / "eval_samples.jsonl"), vs_init)
