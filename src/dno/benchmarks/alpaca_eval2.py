"""AlpacaEval 2.0 through the alpaca_eval package: the official path of the final stage (dno-eval,
and dno-run's last stage).

`eval=alpaca_eval2`: the official evaluation. The 805 instructions and GPT-4-Turbo reference
answers of `alpaca_eval_gpt4_baseline.json` (from the `tatsu-lab/alpaca_eval` dataset at
`eval.alpaca_eval2.revision`, or `eval.alpaca_eval2.reference_outputs=PATH`), answered with the model's
chat template and the run's sampling settings, annotated through `alpaca_eval.evaluate` with the package's
`weighted_alpaca_eval_gpt4_turbo` config (or its prompt and parser against any OpenAI-compatible
server: `eval.alpaca_eval2.base_url`, `annotator_model`, `api_key_env`). Everything the package would
write into site-packages (annotation cache, GLM weights, leaderboard) goes to the output directory;
the instruction-difficulty file comes from the hub or `eval.df_gamed_path`. The run fails loudly
unless every instruction was annotated (n_total equals the number of instructions).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from dno.benchmarks.base import EvalError, Evaluated
from dno.data import Prompt
from dno.metrics import glm_notices_silenced
from dno.runtime.files import read_json, write_json
from dno.runtime.layout import BenchmarkDir
from dno.runtime.stages import run_stage
from dno.stages.evaluate import first_responses
from dno.stages.sample import sample_responses

log = logging.getLogger(__name__)
REFERENCE_FILE = "alpaca_eval_gpt4_baseline.json"
OFFICIAL_ANNOTATOR, OFFICIAL_ANNOTATOR_MODEL = "weighted_alpaca_eval_gpt4_turbo", "gpt-4-1106-preview"
ALPACA_EVAL_INSTRUCTIONS = 805
# for the plan: the annotator's template (alpaca_eval_clf_gpt4_turbo's system and user text) and the mean lengths of
# an AlpacaEval instruction and of its GPT-4-Turbo reference answer, in characters
ANNOTATOR_TEMPLATE_CHARS = 1_900
ALPACA_EVAL_MEANS = (420, 1_960)


def _package_dir() -> Path:
    import alpaca_eval

    return Path(alpaca_eval.__file__).parent


def package_leaderboard(annotator: str = OFFICIAL_ANNOTATOR):
    """The AlpacaEval 2.0 leaderboard the alpaca_eval package ships for `annotator` (read only)."""
    import pandas as pd

    return pd.read_csv(_package_dir() / "leaderboards" / "data_AlpacaEval_2" / f"{annotator}_leaderboard.csv",
                       index_col=0)


@dataclass(frozen=True)
class AlpacaEval2:
    """`eval=alpaca_eval2` (conf/eval/alpaca_eval2.yaml): the keys of that file."""

    dataset_repo: str = "tatsu-lab/alpaca_eval"
    revision: str = "main"  # a commit of the dataset repo; the one used is recorded
    reference_outputs: str | None = None  # PATH to alpaca_eval_gpt4_baseline.json instead of the hub
    df_gamed_path: str | None = None  # PATH to df_gamed.csv (instruction difficulty) instead of the hub
    num_instructions: int | None = None  # the first N instructions, for a quick check (None: all 805)
    annotator: str = OFFICIAL_ANNOTATOR  # an alpaca_eval annotator config
    annotator_model: str = OFFICIAL_ANNOTATOR_MODEL
    base_url: str | None = None  # None: api.openai.com; any OpenAI-compatible server
    api_key_env: str | None = "OPENAI_API_KEY"  # the NAME of the variable holding the key
    max_new_tokens: int = 2048  # answer length for AlpacaEval

    def check(self) -> None:
        if not (_package_dir() / "evaluators_configs" / self.annotator / "configs.yaml").exists():
            raise ValueError(f"eval.annotator={self.annotator!r} is not an alpaca_eval annotator config")
        for key in ("reference_outputs", "df_gamed_path"):
            if getattr(self, key) and not Path(getattr(self, key)).exists():
                raise ValueError(f"eval.{key}={getattr(self, key)} does not exist")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"eval.alpaca_eval2.api_key_env: the environment variable {self.api_key_env} is not set")

    def plan_questions(self, n_test: int, instruction: float, answer: float) -> dict:
        """What the plan prices: one annotation (one completion token, read from its log-probabilities) per
        instruction, the template with the instruction, the GPT-4-Turbo reference and the model's answer."""
        from dno.oracles.api import ChatAPI, ClientOptions

        n = self.num_instructions or ALPACA_EVAL_INSTRUCTIONS
        api = ChatAPI(ClientOptions(model=self.annotator_model, base_url=self.base_url, api_key_env=None))
        return {"requests": n, "prompt_chars": ANNOTATOR_TEMPLATE_CHARS + ALPACA_EVAL_MEANS[0] + ALPACA_EVAL_MEANS[1]
                + min(answer, self.max_new_tokens * 4), "completion_tokens": 1, "api": api}

    def run(self, target: Evaluated, out: BenchmarkDir) -> dict:
        """The 805 instructions answered by the target (stage `sample`), annotated by alpaca_eval (`evaluate`)."""
        reference, revision = self.reference_path()
        rows = read_json(reference)[: self.num_instructions or None]
        prompts = [Prompt.of(str(i), r["instruction"]) for i, r in enumerate(rows)]
        run_stage(out, "sample", lambda: sample_responses(
            target.sampler(max_new_tokens=self.max_new_tokens), prompts, out.model_samples, k=1,
            seed=target.seed_of("alpaca_eval"), desc="AlpacaEval answers"), (out.model_samples,))
        outputs = [{"instruction": r["instruction"], "output": text, "generator": target.name,
                    "dataset": r.get("dataset", "alpaca_eval")}
                   for r, text in zip(rows, first_responses(out.model_samples), strict=True)]
        write_json(out.model_outputs, outputs)
        write_json(out.reference_outputs, rows)
        return run_stage(out, "evaluate", lambda: self.evaluate(out, outputs, target.name, revision),
                         (out.summary,))

    def reference_path(self) -> tuple[str, str | None]:
        """The reference outputs file and the dataset revision it came from (None for a local file)."""
        if self.reference_outputs:
            return str(self.reference_outputs), None
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(self.dataset_repo, REFERENCE_FILE, repo_type="dataset", revision=self.revision)
        return path, Path(path).parent.name  # .../snapshots/<commit>/file: the commit actually used

    def annotator_config(self, out: BenchmarkDir) -> Path:
        """The package's annotator config, pointed at the judge and the files we choose, under `out`."""
        import yaml

        package = _package_dir() / "evaluators_configs"
        config = yaml.safe_load((package / self.annotator / "configs.yaml").read_text())
        (name, body), = config.items()
        body["prompt_template"] = str(package / body["prompt_template"])
        kwargs = body["completions_kwargs"]
        kwargs["model_name"] = self.annotator_model
        if self.base_url:  # an OpenAI-compatible server: no key in this file, the client reads the environment
            out.client_config.parent.mkdir(parents=True, exist_ok=True)
            out.client_config.write_text(yaml.safe_dump({"default": [{"base_url": self.base_url}]}))
            kwargs["client_config_path"] = str(out.client_config)
            kwargs["requires_chatml"] = True
        out.annotator_config.parent.mkdir(parents=True, exist_ok=True)
        out.annotator_config.write_text(yaml.safe_dump({name: body}))
        return out.annotator_config

    def evaluate(self, out: BenchmarkDir, outputs: list[dict], generator: str, revision: str | None) -> dict:
        """alpaca_eval.evaluate on the answers against out.reference_outputs; fails unless every
        instruction was annotated."""
        import alpaca_eval

        config = self.annotator_config(out)
        with openai_key(self.api_key_env), instruction_difficulty(self.df_gamed_path), glm_notices_silenced():
            board, _ = alpaca_eval.evaluate(
                model_outputs=outputs, reference_outputs=str(out.reference_outputs), annotators_config=str(config),
                name=generator, output_path=str(out.path), precomputed_leaderboard=None, is_cache_leaderboard=False,
                is_return_instead_of_print=True, fn_metric="get_length_controlled_winrate",
                metric_kwargs={"save_weights_dir": str(out.glm_weights)}, caching_path=str(out.annotator_cache))
        self.bill(out)
        row = board.loc[generator].to_dict()
        if int(row["n_total"]) != len(outputs):
            raise EvalError(f"alpaca_eval annotated {int(row['n_total'])} of {len(outputs)} instructions (failed or "
                            f"unmatched annotations); the result would not be comparable: see {out.annotations}")
        official = self.annotator == OFFICIAL_ANNOTATOR and self.annotator_model == OFFICIAL_ANNOTATOR_MODEL
        if official:
            merged_leaderboard(row, generator, self.annotator).to_csv(out.leaderboard)
        summary = {
            "alpaca_eval/lc_win_rate": float(row["length_controlled_winrate"]),
            "alpaca_eval/win_rate": float(row["win_rate"]), "alpaca_eval/standard_error": float(row["standard_error"]),
            "alpaca_eval/avg_length": float(row["avg_length"]), "alpaca_eval/n_total": int(row["n_total"]),
            "alpaca_eval/annotator": self.annotator if official else f"{self.annotator}@{self.annotator_model}",
            "alpaca_eval/baseline": "gpt4_turbo", "alpaca_eval/reference_revision": revision,
        }
        write_json(out.summary, summary)
        return summary


    def bill(self, out: BenchmarkDir) -> None:
        """alpaca_eval's annotator pays through its own client and writes the price of each annotation into
        annotations.json (`preference_price_per_example`: its total tokens at its own price per token): each goes
        into the run's ledger, once per (instruction, outputs). Re-priced with conf/prices when the package's rate
        is known (its tokens recovered from its price); 0 on another server (base_url); a price the package could
        not make (NaN) is counted as a request with `usd_unknown`."""
        import math

        from dno.oracles.cache import cache_key
        from dno.oracles.ledger import pay_priced
        from dno.oracles.prices import UnknownPrice, price_of

        if not out.annotations.exists():
            return
        try:
            card = None if self.base_url else price_of(self.annotator_model)
        except UnknownPrice:
            card = None
        per_token = package_price_per_token(self.annotator_model)
        for a in read_json(out.annotations):
            price = a.get("preference_price_per_example", a.get("price_per_example"))
            known = isinstance(price, int | float) and math.isfinite(price)
            tokens = round(price / per_token) if known and per_token else 0
            usage = {"prompt_tokens": max(tokens - 1, 0), "completion_tokens": 1 if tokens else 0}
            usd = 0.0 if self.base_url else card.usd(usage) if card and tokens else float(price) if known else 0.0
            key = cache_key(benchmark="alpaca_eval2", annotator=self.annotator, model=self.annotator_model,
                            instruction=a.get("instruction"), output_1=a.get("output_1"), output_2=a.get("output_2"))
            pay_priced(key, model=self.annotator_model, usd=usd, usage=usage, priced_by="alpaca_eval",
                       **({} if known or self.base_url else {"usd_unknown": True}))


def package_price_per_token(model: str) -> float | None:
    """alpaca_eval's own USD per token of `model` (None when it does not know it)."""
    import math

    from alpaca_eval.decoders.openai import _get_price_per_token

    with contextlib.suppress(Exception):
        value = float(_get_price_per_token(model))
        return value if math.isfinite(value) and value > 0 else None
    return None


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
