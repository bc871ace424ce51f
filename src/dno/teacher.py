"""Gold answers (the paper's teacher, GPT-4-Turbo) for the prompts of the iterations.

`DataGold` keeps what the data carries (UltraFeedback's best-rated answer; nothing for the
builtin prompts). `BestOfN` needs no network: the best of N samples of the initial policy under
the oracle (highest expected win-rate, first on a tie), computed once per prompt and (model, N,
sampling, oracle, seed)
and cached in `cache_dir/teachers/`, so every run of a sweep reuses what an earlier run paid for.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dno.oracles.base import OK
from dno.records import read_json, write_json


class DataGold:
    """The data's own gold answers, if any."""

    def gold(self, **_) -> dict[str, str]:
        return {}


class BestOfN:
    def __init__(self, n: int = 8) -> None:
        if n < 2:
            raise ValueError(f"teacher.n must be at least 2, got {n}")
        self.n = n

    def gold(self, *, policy, tokenizer, oracle, prompts: list[dict], sampling, seed: int, cache_dir: str,
             key: dict) -> dict[str, str]:
        digest = hashlib.sha1(json.dumps({**key, "n": self.n, "seed": seed}, sort_keys=True,
                                         default=str).encode()).hexdigest()[:16]
        cached = Path(cache_dir) / "teachers" / f"best_of_{self.n}-{digest}.json"
        gold = read_json(cached) if cached.exists() else {}
        missing = [p for p in prompts if p["id"] not in gold]
        if missing:
            gold |= self._answers(policy(), tokenizer, oracle, missing, sampling, seed)
            write_json(cached, gold)
        return {p["id"]: gold[p["id"]] for p in prompts if p["id"] in gold}

    def _answers(self, model, tokenizer, oracle, prompts, sampling, seed) -> dict[str, str]:
        from dno.policy import generate

        responses, _ = generate(
            model, tokenizer, [p["instruction"] for p in prompts], n=self.n,
            max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            batch_size=sampling.batch_size, seed=seed, desc=f"teacher (best of {self.n})",
        )
        gold = {}
        judgements = oracle.judge_many(list(zip(prompts, responses, strict=True)), desc="teacher judging")
        for prompt, candidates, j in zip(prompts, responses, judgements, strict=True):
            if j.status == OK:  # no judgement, no gold: the prompt keeps no teacher answer
                wins = j.win_rates()
                gold[prompt["id"]] = candidates[wins.index(max(wins))]
        return gold
