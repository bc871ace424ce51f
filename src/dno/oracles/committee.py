"""A committee: the majority vote of several oracles on every asked pair.

Each member's P(i > j) is its vote (above 0.5 for i, below for j, 0.5 half a vote each); the
committee's P(i > j) is 1, 0 or 0.5 by the majority. Three transitive judges can make an
intransitive committee (Condorcet's paradox: a > b > c, b > c > a, c > a > b give a > b, b > c
and c > a), which no reward can represent and which DNO's general preferences are for.

A prompt counts only if every member answered it (`ok`); otherwise the committee's judgement
takes the worst member status, so a missing vote never tips a majority.
"""

from __future__ import annotations

from omegaconf import DictConfig, ListConfig, OmegaConf

from dno.oracles.base import OK, Judgement, Oracle, add_costs, all_pairs, worst


class Committee(Oracle):
    """`oracle=committee`: the majority vote of `members` (a mapping or list of oracles, at least two)."""

    is_listwise = False

    def __init__(self, members) -> None:
        if isinstance(members, (DictConfig, ListConfig)):
            # hydra passes the instantiated members inside a config, which turns dataclass oracles
            # (RulesOracle) back into structured configs: make them objects again
            members = OmegaConf.to_object(members)
        self.members = list(members.values() if hasattr(members, "values") else members)
        if len(self.members) < 2:
            raise ValueError(f"a committee needs at least two members, got {len(self.members)}")

    @property
    def is_paid(self) -> bool:
        return any(m.is_paid for m in self.members)

    def check(self) -> None:
        for m in self.members:
            m.check()

    def judge(self, prompt, candidates, pairs=None) -> Judgement:
        return self.judge_many([(prompt, candidates)], pairs)[0]

    def judge_many(self, items, pairs=None, desc="judging") -> list[Judgement]:
        votes = [m.judge_many(items, pairs, desc=f"{desc} (member {k + 1}/{len(self.members)})")
                 for k, m in enumerate(self.members)]
        out = []
        for (_, candidates), js in zip(items, zip(*votes, strict=True), strict=True):
            n, status = len(candidates), worst(j.status for j in js)
            cost = add_costs(j.cost for j in js)
            members = [j.to_dict() for j in js]
            if status != OK:
                out.append(Judgement(status=status, cost=cost, detail={"members": members}))
                continue
            prefs: list[list[float | None]] = [[None] * n for _ in range(n)]
            for i, j in pairs if pairs is not None else all_pairs(n):
                for_i = sum(1.0 if p > 0.5 else 0.5 if p == 0.5 else 0.0
                            for p in (m.preference(i, j) for m in js))
                prefs[i][j] = 1.0 if for_i > len(js) / 2 else 0.0 if for_i < len(js) / 2 else 0.5
                prefs[j][i] = 1.0 - prefs[i][j]
            out.append(Judgement(prefs=prefs, cost=cost, detail={"members": members}))
        return out
