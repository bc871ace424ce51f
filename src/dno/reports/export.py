"""dno-export: a run's per-iteration data as a Hugging Face dataset, in TRL's preference format.

Two configs (subsets), one split per iteration, named as the run's iteration folders:
- `pairs`: what iteration t trained on (replayed pairs included, `source_iteration` says from where),
  conversational `prompt` / `chosen` / `rejected` as TRL's DPOTrainer reads them, with r_t of both
  responses (`chosen_win_prob`, `rejected_win_prob`) and pi_t's log-probs of both responses where
  the objective had a reference (`pi_t_chosen_logps`: our `ref_chosen_logps`, renamed because TRL's
  `precompute_ref_log_probs` adds columns of that name for its own reference and refuses duplicates);
- `samples`: every prompt's K responses, the judge's scores and r_t per response, its raw answer.

`out/` gets each config saved with `save_to_disk` (`out/pairs`, `out/samples`), the same as Parquet
(`out/data/<config>/<split>.parquet`) and a dataset card (`out/README.md`) whose `configs:` header
makes `load_dataset(out, "pairs")` work locally and on the hub. `hub=ORG/NAME` uploads the Parquet
files and the card with huggingface_hub (a token from `huggingface-cli login` or HF_TOKEN).
"""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from dno.runtime.config import ConfigError
from dno.runtime.files import replace_dir
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, PairRow, read_rows

log = logging.getLogger(__name__)
CONFIGS = ("pairs", "samples")


def iterations(run: RunDir) -> list[int]:
    """The iterations of `run` whose pairs are done, in order."""
    return [t for t in run.iterations() if run.iteration(t).done("pairs")]


def pair_rows(path: Path, t: int) -> list[dict]:
    return [{"prompt": p.prompt.messages, "chosen": [{"role": "assistant", "content": p.chosen}],
             "rejected": [{"role": "assistant", "content": p.rejected}], "prompt_id": p.prompt.id,
             "iteration": t, "source_iteration": p.source_iteration, "type": p.type,
             "chosen_win_prob": p.chosen_win_prob, "rejected_win_prob": p.rejected_win_prob,
             "chosen_score": p.chosen_score, "rejected_score": p.rejected_score,
             "pi_t_chosen_logps": p.ref_chosen_logps, "pi_t_rejected_logps": p.ref_rejected_logps}
            for p in read_rows(path, PairRow)]


def sample_rows(path: Path, t: int) -> list[dict]:
    """One row per prompt: its answers with the judge's view (scores over the candidates: the answers, then
    the teacher's answer where there was one, at `teacher_candidate`; r_t per candidate)."""
    return [{"prompt": j.prompt.messages, "prompt_id": j.prompt.id, "iteration": t, "responses": j.responses,
             "teacher": j.prompt.teacher, "candidates": j.candidates, "teacher_candidate": j.teacher_candidate,
             "scores": j.judgement.scores, "win_probs": j.win_probs, "judge_status": j.judgement.status,
             "judge_raw": j.judgement.raw}
            for j in read_rows(path, Judged)]


def run_config(run: RunDir) -> dict:
    """The run's resolved config and its config-group choices (from Hydra's files), where recorded."""
    if not run.hydra_config.exists():
        return {}
    cfg = OmegaConf.to_container(OmegaConf.load(run.hydra_config), resolve=False)
    choices = {}
    if run.hydra_settings.exists():
        choices = OmegaConf.to_container(OmegaConf.load(run.hydra_settings).hydra.runtime.choices)
    return {"config": cfg, "choices": choices}


def export_run(run_dir: Path, out: Path, *, hub: str | None = None, private: bool = True) -> dict:
    """Write the run's per-iteration pairs and samples into `out` (see the module doc); returns row counts."""
    from datasets import Dataset, DatasetDict, disable_progress_bars

    disable_progress_bars()  # seconds of work: one line per config is printed instead
    run_dir, out = Path(run_dir), Path(out)
    run = RunDir(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run={run_dir}: no such run directory")
    ts = iterations(run)
    if not ts:
        raise ConfigError(f"run={run_dir}: no iteration has finished its pairs stage: nothing to export")
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise ConfigError(f"out={out} is inside the run directory: choose a directory of its own")
    builders = {"pairs": lambda t: pair_rows(run.iteration(t).pairs, t),
                "samples": lambda t: sample_rows(run.iteration(t).judgements, t)}
    counts: dict = {}

    def build(tmp: Path) -> None:
        for name in CONFIGS:
            splits = {run.iteration(t).name: Dataset.from_list(builders[name](t)) for t in ts}
            DatasetDict(splits).save_to_disk(str(tmp / name))
            for split, ds in splits.items():
                ds.to_parquet(str(tmp / "data" / name / f"{split}.parquet"))
            counts[name] = {split: len(ds) for split, ds in splits.items()}
        (tmp / "README.md").write_text(dataset_card(run, counts))

    replace_dir(out, build)
    if hub:
        push(out, hub, private)
    return counts


def dataset_card(run: RunDir, counts: dict) -> str:
    """The card: the `configs:` header that maps configs and splits to the Parquet files, then prose."""
    header = {"configs": [{"config_name": name, "data_files": [
        {"split": split, "path": f"data/{name}/{split}.parquet"} for split in counts[name]]} for name in CONFIGS],
        "tags": ["dno", "preference", "dpo", "trl", "synthetic"]}
    recorded = run_config(run)
    cfg, choices = recorded.get("config", {}), recorded.get("choices", {})
    sched = cfg.get("schedule", {})
    setup = [f"- model (pi_1): `{cfg.get('model', {}).get('name', '?')}`",
             f"- judge (oracle): `{choices.get('oracle', '?')}` ({cfg.get('oracle', {}).get('_target_', '?')})",
             f"- variant: `loss={choices.get('loss', '?')}`, beta {cfg.get('loss', {}).get('beta', '?')}",
             f"- schedule: `{choices.get('schedule', '?')}`: {sched.get('iterations', '?')} iterations, "
             f"{sched.get('samples_per_prompt', '?')} samples per prompt, data `{choices.get('data', '?')}`",
             f"- seed: {cfg.get('seed', '?')}"] if cfg else ["- the run's config was not recorded (no Hydra config)"]
    rows = [f"| {s} | {counts['samples'][s]} | {counts['pairs'][s]} |" for s in counts["pairs"]]
    first = next(iter(counts["pairs"]))
    return "\n".join([
        "---", yaml.safe_dump(header, sort_keys=False).strip(), "---", "",
        f"# DNO iterations of `{run.path.name}`", "",
        "Per-iteration data of a Direct Nash Optimization run (arXiv 2404.03715), exported by `dno-export` "
        "from the `dno` reference implementation. Responses were sampled from pi_t, the "
        "policy of iteration t, and judged by the run's preference oracle; their license is that of the "
        "model that wrote them and of the prompt set.", "", "## The run", "", *setup, "",
        "## Configs and splits", "", "One split per iteration, named as the run's iteration directories.", "",
        "| split | samples (prompts) | pairs |", "|---|---|---|", *rows, "",
        "- `pairs`: TRL's conversational preference format (`prompt`, `chosen`, `rejected` as message lists) "
        "plus `chosen_win_prob` / `rejected_win_prob` (r_t, the expected win-rate of a response against pi_t "
        "under the judge), `chosen_score` / `rejected_score`, `type` (which pair rule made it), "
        "`source_iteration` (replayed pairs come from earlier iterations) and the log-probs of both responses "
        "under pi_t, the reference of iteration t (`pi_t_chosen_logps` / `pi_t_rejected_logps`, summed over "
        "response tokens; null when the objective had no reference; not named `ref_*`, which TRL's "
        "`precompute_ref_log_probs` adds for its own reference).",
        "- `samples`: every prompt's responses, the teacher's answer, the judge's `scores` over `candidates` "
        "(the responses, then the teacher's answer at index `teacher_candidate` when there is one), `win_probs` "
        "per candidate, `judge_status` and `judge_raw`.",
        "", "## Use", "", "```python", "from datasets import load_dataset", "",
        f'pairs = load_dataset("PATH_OR_HUB_ID", "pairs", split="{first}")   # TRL DPOTrainer(train_dataset=pairs)',
        "```", ""])


def push(out: Path, hub: str, private: bool) -> None:
    """Upload the Parquet files and the card to the hub dataset repo `hub` (created if needed)."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(hub, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(out), repo_id=hub, repo_type="dataset", allow_patterns=["README.md", "data/**"],
                      commit_message="dno-export")
    log.info("pushed %s to https://huggingface.co/datasets/%s", out, hub)
