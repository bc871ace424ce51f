"""AlpacaEval 2.0 through the alpaca_eval package: the official path of the final stage (dno-eval,
and dno-run's last stage; `dno.stages.final` chooses between this and `eval=local`).

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
from pathlib import Path

from omegaconf import DictConfig

from dno.config import ConfigError
from dno.records import write_json

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


def check(cfg: DictConfig) -> None:
    """The evaluation's settings, checked by dno-run and dno-eval before any compute."""
    e = cfg.eval
    if e.name not in ("local", "alpaca_eval2"):
        raise ConfigError(f"eval.name must be local or alpaca_eval2, got {e.name!r}")
    if e.name == "local" and e.baseline not in ("auto", "pi_1", "teacher"):
        raise ConfigError(f"eval.baseline must be auto, pi_1 or teacher, got {e.baseline!r}")
    if e.name == "local" and not 0.0 <= e.min_valid_frac <= 1.0:
        raise ConfigError(f"eval.min_valid_frac must be in [0, 1], got {e.min_valid_frac}")
    if e.name == "alpaca_eval2":
        if not (_package_dir() / "evaluators_configs" / e.annotator / "configs.yaml").exists():
            raise ConfigError(f"eval.annotator={e.annotator!r} is not an alpaca_eval annotator config")
        for key in ("reference_outputs", "df_gamed_path"):
            if e.get(key) and not Path(e[key]).exists():
                raise ConfigError(f"eval.{key}={e[key]} does not exist")
        if e.api_key_env and not os.environ.get(e.api_key_env):
            raise ConfigError(f"eval.api_key_env: the environment variable {e.api_key_env} is not set")
