"""Teacher answers (the paper's teacher is GPT-4-Turbo) for the prompts of the iterations.

`DataTeacher` keeps what the data carries (UltraFeedback's best-rated answer; nothing for the
builtin prompts). `BestOfN` needs no network: the best of N samples of the initial policy under
the oracle (highest r_t, `win_prob`, first on a tie), computed once per prompt and (model, N,
sampling, oracle, seed)
and cached in `cache_dir/teachers/`, so every run of a sweep reuses what an earlier run paid for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dno.oracles.base import OK
from dno.records import read_json, write_json


class DataTeacher:
    """The data's own teacher answers, if any."""

    answers_every_prompt = False  # only where the data has them

    def answers(self, **_) -> dict[str, str]:
        return {}


class BestOfN:
    answers_every_prompt = True  # (a prompt whose judgement failed keeps none)

    def __init__(self, n: int = 8) -> None:
        if n < 2:
            raise ValueError(f"teacher.n must be at least 2, got {n}")
        self.n = n

    def answers(self, *, policy, tokenizer, oracle, prompts: list[dict], sampling, seed: int, cache_dir: str,
             key: dict) -> dict[str, str]:
        digest = hashlib.sha1(json.dumps({**key, "n": self.n, "seed": seed}, sort_keys=True,
                                         default=str).encode()).hexdigest()[:16]
        cached = Path(cache_dir) / "teachers" / f"best_of_{self.n}-{digest}.json"
        teacher = read_json(cached) if cached.exists() else {}
        missing = [p for p in prompts if p["id"] not in teacher]
        if missing:
            teacher |= self._answers(policy(), tokenizer, oracle, missing, sampling, seed)
            write_json(cached, teacher)
        return {p["id"]: teacher[p["id"]] for p in prompts if p["id"] in teacher}

    def _answers(self, model, tokenizer, oracle, prompts, sampling, seed) -> dict[str, str]:
        from dno.data import chat_prompt
        from dno.policy import generate, sampling_options

        responses, _ = generate(model, tokenizer, [chat_prompt(p) for p in prompts], n=self.n, seed=seed,
                                desc=f"teacher (best of {self.n})", **sampling_options(sampling))
        teacher = {}
        judgements = oracle.judge_many(list(zip(prompts, responses, strict=True)), desc="teacher judging")
        for prompt, candidates, j in zip(prompts, responses, judgements, strict=True):
            if j.status == OK:  # no judgement, no answer: the prompt keeps no teacher answer
                wins = j.win_probs()
                teacher[prompt["id"]] = candidates[wins.index(max(wins))]
        return teacher
