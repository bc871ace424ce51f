"""dno-eval: generate a model's answers and evaluate them; also the final stage of dno-run.

    dno-eval checkpoint=outputs/demo/iter_3/checkpoint                # eval=local (offline)
    dno-eval eval=alpaca_eval2 checkpoint=PATH                        # AlpacaEval 2.0, GPT-4-Turbo annotator

`eval=local`: the data's test split, the configured oracle as annotator, baseline pi_1 (or the
data's gold answers), win-rate and LC win-rate from alpaca_eval's metric code (stages/final.py).

`eval=alpaca_eval2`: the official evaluation. The 805 instructions and GPT-4-Turbo reference
answers of `alpaca_eval_gpt4_baseline.json` (from the `tatsu-lab/alpaca_eval` dataset at
`eval.revision`, or `eval.reference_outputs=PATH`), answered with the model's chat template and
the run's sampling settings, annotated through `alpaca_eval.evaluate` with the package's
`weighted_alpaca_eval_gpt4_turbo` config (or its prompt and parser against any OpenAI-compatible
server: `eval.base_url`, `eval.annotator_model`, `eval.api_key_env`). Everything the package would
write into site-packages (annotation cache, GLM weights, leaderboard) goes to the output directory;
the instruction-difficulty file comes from the hub or `eval.df_gamed_path`. The run fails loudly
unless every instruction was annotated (n_total equals the number of instructions).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from dno.config import ConfigError
from dno.records import read_json, run_stage, write_json
from dno.run import CONF_DIR, stage_seed
from dno.stages.evaluate import first_responses

log = logging.getLogger(__name__)
REFERENCE_FILE = "alpaca_eval_gpt4_baseline.json"
OFFICIAL_ANNOTATOR, OFFICIAL_ANNOTATOR_MODEL = "weighted_alpaca_eval_gpt4_turbo", "gpt-4-1106-preview"


class EvalError(RuntimeError):
    pass


def _package_dir() -> Path:
    import alpaca_eval

    return Path(alpaca_eval.__file__).parent


def package_leaderboard(annotator: str = OFFICIAL_ANNOTATOR):
    """The AlpacaEval 2.0 leaderboard the alpaca_eval package ships for `annotator` (read only)."""
    import pandas as pd

    return pd.read_csv(_package_dir() / "leaderboards" / "data_AlpacaEval_2" / f"{annotator}_leaderboard.csv",
                       index_col=0)


def reference_path(e: DictConfig) -> tuple[str, str | None]:
    """The reference outputs file and the dataset revision it came from (None for a local file)."""
    if e.reference_outputs:
        return str(e.reference_outputs), None
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(e.dataset_repo, REFERENCE_FILE, repo_type="dataset", revision=e.revision)
    return path, Path(path).parent.name  # .../snapshots/<commit>/file: the commit actually used


def annotator_config(e: DictConfig, out: Path) -> Path:
    """The package's annotator config, pointed at the judge and the files we choose, under `out`."""
    import yaml

    package = _package_dir() / "evaluators_configs"
    config = yaml.safe_load((package / e.annotator / "configs.yaml").read_text())
    (name, body), = config.items()
    body["prompt_template"] = str(package / body["prompt_template"])
    kwargs = body["completions_kwargs"]
    kwargs["model_name"] = e.annotator_model
    if e.base_url:  # an OpenAI-compatible server: no key in this file, the client reads the environment
        client = out / "annotator" / "client_config.yaml"
        client.parent.mkdir(parents=True, exist_ok=True)
        client.write_text(yaml.safe_dump({"default": [{"base_url": e.base_url}]}))
        kwargs["client_config_path"] = str(client)
        kwargs["requires_chatml"] = True
    path = out / "annotator" / "configs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({name: body}))
    return path


@contextlib.contextmanager
def openai_key(api_key_env: str | None):
    """The annotator's OpenAI client reads OPENAI_API_KEY: map the named variable onto it in this
    process only (never onto disk)."""
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = (os.environ.get(api_key_env, "") if api_key_env else "") or old or "EMPTY"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old


@contextlib.contextmanager
def instruction_difficulty(df_gamed_path: str | None):
    """alpaca_eval's LC GLM downloads df_gamed.csv (per-instruction difficulty) from the hub; with
    `eval.df_gamed_path` that one download answers from the given file instead."""
    if not df_gamed_path:
        yield
        return
    from alpaca_eval.metrics import glm_winrate

    download = glm_winrate.hf_hub_download

    def local_first(*args, **kwargs):
        return str(df_gamed_path) if kwargs.get("filename") == "df_gamed.csv" else download(*args, **kwargs)

    glm_winrate.hf_hub_download = local_first
    try:
        yield
    finally:
        glm_winrate.hf_hub_download = download


def merged_leaderboard(row: dict, name: str, annotator: str):
    """A copy of the package's AlpacaEval 2.0 leaderboard with this run's row, best LC first."""
    import pandas as pd

    board = package_leaderboard(annotator)
    board.loc[name] = pd.Series(row)
    return board.sort_values("length_controlled_winrate", ascending=False)


def official_evaluation(e: DictConfig, out: Path, outputs: list[dict], generator: str, n_expected: int,
                        revision: str | None, reference: str) -> dict:
    import alpaca_eval

    config = annotator_config(e, out)
    with openai_key(e.api_key_env), instruction_difficulty(e.df_gamed_path):
        board, annotations = alpaca_eval.evaluate(
            model_outputs=outputs, reference_outputs=reference, annotators_config=str(config), name=generator,
            output_path=str(out), precomputed_leaderboard=None, is_cache_leaderboard=False,
            is_return_instead_of_print=True, fn_metric="get_length_controlled_winrate",
            metric_kwargs={"save_weights_dir": str(out / "weights")},
            caching_path=str(out / "annotator" / "annotations_cache.json"))
    row = board.loc[generator].to_dict()
    if int(row["n_total"]) != n_expected:
        raise EvalError(f"alpaca_eval annotated {int(row['n_total'])} of {n_expected} instructions (failed or "
                        f"unmatched annotations); the result would not be comparable: see {out}/annotations.json")
    official = e.annotator == OFFICIAL_ANNOTATOR and e.annotator_model == OFFICIAL_ANNOTATOR_MODEL
    if official:
        merged_leaderboard(row, generator, e.annotator).to_csv(out / "leaderboard.csv")
    summary = {
        "alpaca_eval/lc_win_rate": float(row["length_controlled_winrate"]),
        "alpaca_eval/win_rate": float(row["win_rate"]), "alpaca_eval/standard_error": float(row["standard_error"]),
        "alpaca_eval/avg_length": float(row["avg_length"]), "alpaca_eval/n_total": int(row["n_total"]),
        "alpaca_eval/annotator": e.annotator if official else f"{e.annotator}@{e.annotator_model}",
        "alpaca_eval/baseline": "gpt4_turbo", "alpaca_eval/reference_revision": revision,
    }
    write_json(out / "summary.json", summary)
    return summary


def final_evaluation(cfg: DictConfig, out: Path, *, policy, tokenizer, oracle, test_prompts: list[dict],
                     baseline_samples: Path, generator: str, same_as_baseline: bool = False) -> dict:
    """Answers of `policy()` evaluated by `cfg.eval` into `out` (resumable stages sample/evaluate).

    `baseline_samples`: pi_1's answers on `test_prompts` (eval=local); `same_as_baseline`: the
    policy is pi_1 itself, whose test answers are reused."""
    from dno.stages.final import DATASET, alpaca_outputs, baseline_outputs, local_evaluation
    from dno.stages.sample import sample_responses

    e = cfg.eval
    if e.name == "local":
        def sample() -> dict:
            if same_as_baseline:
                out.mkdir(parents=True, exist_ok=True)
                (out / "model_samples.jsonl").write_text(Path(baseline_samples).read_text())
                return {}
            return sample_responses(policy(), tokenizer, test_prompts, out / "model_samples.jsonl", k=1,
                                    sampling=cfg.sampling, seed=stage_seed(cfg.seed, 0, "test"), desc="test")

        run_stage(out, "sample", sample)
        return run_stage(out, "evaluate", lambda: local_evaluation(
            oracle, test_prompts, out,
            outputs=alpaca_outputs(test_prompts, first_responses(out / "model_samples.jsonl"), generator, DATASET),
            reference=baseline_outputs(test_prompts, baseline_samples, e.baseline, DATASET),
            annotator=cfg.oracle._target_.rsplit(".", 1)[-1]))

    reference, revision = reference_path(e)
    rows = read_json(reference)[: e.num_instructions or None]
    prompts = [{"id": str(i), "instruction": r["instruction"]} for i, r in enumerate(rows)]
    sampling = OmegaConf.merge(cfg.sampling, {"max_new_tokens": e.max_new_tokens})
    run_stage(out, "sample", lambda: sample_responses(policy(), tokenizer, prompts, out / "model_samples.jsonl", k=1,
                                                      sampling=sampling, seed=stage_seed(cfg.seed, 0, "alpaca_eval"),
                                                      desc="AlpacaEval answers"))
    outputs = [{**o, "dataset": r.get("dataset", o["dataset"])} for o, r in zip(alpaca_outputs(
        prompts, first_responses(out / "model_samples.jsonl"), generator, "alpaca_eval"), rows, strict=True)]
    write_json(out / "model_outputs.json", outputs)
    reference_rows = out / "reference_outputs.json"
    write_json(reference_rows, rows)
    return run_stage(out, "evaluate", lambda: official_evaluation(e, out, outputs, generator, len(rows), revision,
                                                                  str(reference_rows)))


def check(cfg: DictConfig) -> None:
    """The evaluation's settings, checked by dno-run and dno-eval before any compute."""
    e = cfg.eval
    if e.name not in ("local", "alpaca_eval2"):
        raise ConfigError(f"eval.name must be local or alpaca_eval2, got {e.name!r}")
    if e.name == "local" and e.baseline not in ("auto", "pi_1", "gold"):
        raise ConfigError(f"eval.baseline must be auto, pi_1 or gold, got {e.baseline!r}")
    if e.name == "alpaca_eval2":
        if not (_package_dir() / "evaluators_configs" / e.annotator / "configs.yaml").exists():
            raise ConfigError(f"eval.annotator={e.annotator!r} is not an alpaca_eval annotator config")
        for key in ("reference_outputs", "df_gamed_path"):
            if e.get(key) and not Path(e[key]).exists():
                raise ConfigError(f"eval.{key}={e[key]} does not exist")
        if e.api_key_env and not os.environ.get(e.api_key_env):
            raise ConfigError(f"eval.api_key_env: the environment variable {e.api_key_env} is not set")


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """dno-eval: `cfg.checkpoint` (null: the configured model itself) into Hydra's output directory."""
    from hydra.core.hydra_config import HydraConfig

    from dno.run import Policies, prepare
    from dno.stages.sample import sample_responses

    if cfg.checkpoint and not Path(cfg.checkpoint).exists():
        raise ConfigError(f"checkpoint={cfg.checkpoint} does not exist")
    r = prepare(cfg)
    from dno.policy import load_tokenizer

    out = Path(HydraConfig.get().runtime.output_dir)
    r.tokenizer = load_tokenizer(cfg.model.get("tokenizer") or cfg.model.path, cfg.cache_dir)
    r.policies = Policies(cfg, r.tokenizer, r.accelerator.device)
    ckpt = Path(cfg.checkpoint) if cfg.checkpoint else None
    baseline = out / "baseline_samples.jsonl"
    if cfg.eval.name == "local":
        run_stage(out, "baseline", lambda: sample_responses(
            r.policies.get(None), r.tokenizer, r.splits.test, baseline, k=1, sampling=cfg.sampling,
            seed=stage_seed(cfg.seed, 0, "test"), desc="pi_1 test"))
    generator = f"{cfg.model.name}-{ckpt.parent.name if ckpt else 'init'}"
    summary = final_evaluation(cfg, out, policy=lambda: r.policies.get(ckpt), tokenizer=r.tokenizer,
                               oracle=r.oracle, test_prompts=r.splits.test, baseline_samples=baseline,
                               generator=cfg.get("name") or generator, same_as_baseline=ckpt is None)
    r.tracker.summary(summary)
    r.tracker.finish()
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))
    return summary


@hydra.main(config_path=CONF_DIR, config_name="eval_app", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from dno.oracles.api import BudgetExceeded, OracleError

    try:
        evaluate_checkpoint(cfg)
    except ConfigError as e:
        print(f"dno-eval: config error: {e}", file=sys.stderr)
        sys.exit(2)
    except (EvalError, BudgetExceeded, OracleError) as e:
        print(f"dno-eval: {e}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
