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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dno.data import Prompt
from dno.oracles.base import OK
from dno.runtime.files import read_json, write_json


@dataclass(frozen=True)
class TeacherCache:
    """Where best-of-n answers are kept across runs: `directory`, under a hash of what determines them (`key`:
    the model, the oracle and the sampling settings; the answers' n and seed are added)."""

    directory: Path
    key: dict

    def file(self, n: int, seed: int) -> Path:
        digest = hashlib.sha1(json.dumps({**self.key, "n": n, "seed": seed}, sort_keys=True,
                                         default=str).encode()).hexdigest()[:16]
        return Path(self.directory) / f"best_of_{n}-{digest}.json"


class DataTeacher:
    """The data's own teacher answers, if any."""

    answers_every_prompt = False  # only where the data has them

    def answers(self, prompts: list[Prompt], **_) -> dict[str, str]:
        return {}


class BestOfN:
    """`teacher=best_of_n`: the best of `n` samples of pi_1 under the oracle, for each prompt (the paper's teacher
    y_gold is GPT-4-Turbo's answer; this one needs no network). `n`: samples per prompt."""

    answers_every_prompt = True  # (a prompt whose judgement failed keeps none)

    def __init__(self, n: int = 8) -> None:
        if n < 2:
            raise ValueError(f"teacher.n must be at least 2, got {n}")
        self.n = n

    def answers(self, prompts: list[Prompt], *, sampler: Callable, oracle, seed: int,
                cache: TeacherCache) -> dict[str, str]:
        """Prompt id -> answer; `sampler()` gives pi_1's in-process sampler (called only when the cache
        lacks some prompt's answer)."""
        cached = cache.file(self.n, seed)
        teacher = read_json(cached) if cached.exists() else {}
        missing = [p for p in prompts if p.id not in teacher]
        if missing:
            teacher |= self._answers(sampler(), oracle, missing, seed)
            write_json(cached, teacher)
        return {p.id: teacher[p.id] for p in prompts if p.id in teacher}

    def _answers(self, sampler, oracle, prompts: list[Prompt], seed: int) -> dict[str, str]:
        responses, _ = sampler.sample([p.messages for p in prompts], n=self.n, seed=seed,
                                      desc=f"teacher (best of {self.n})")
        teacher = {}
        judgements = oracle.judge_many(list(zip(prompts, responses, strict=True)), desc="teacher judging")
        for prompt, candidates, j in zip(prompts, responses, judgements, strict=True):
            if j.status == OK:  # no judgement, no answer: the prompt keeps no teacher answer
                wins = j.win_probs()
                teacher[prompt.id] = candidates[wins.index(max(wins))]
        return teacher
