"""Pay the judge only where the student is unsure: the iterations' judge stage with a router (`router=`).

    dno-run router=distilled                          # from iteration 2 on: the student answers where it is sure
    dno-run router=random router.paid_share=[0.3,0.25]  # the baseline: the same paid share, prompts at random

From the second judge stage on, before judging, a student (dno.oracles.student) is trained on every verdict
the paid judge gave in this run so far (`train_student`, its own stage). Then each prompt of the iteration
gets the student's verdict, and with it the decisions the variant's pair rule makes from it (which pairs pass
the margin, in which order; `decisions`). The student's confidence in a prompt is the share of its heads whose
own verdict leads to those same decisions. An audit slice (`router.audit_share` of the prompts, at random) is
always sent to the paid judge; on it, Trust or Escalate's bound (dno.oracles.calibration) sets the confidence
threshold above which the student agrees with the judge on every decision with probability at least
1 - `router.alpha`, at level 1 - `router.delta`. Prompts at or above it are the student's; the others go to the
paid judge. A student that cannot meet the bound answers nothing. `router=random` sends the same share of
prompts to the paid judge, chosen at random (audit slice included), and lets the student answer the rest.

Only the iterations' judge stage is routed (the labels DNO trains on): validation and the final benchmarks
measure the result and are always judged by the real judge. A student verdict costs nothing and never enters
the ledger; `cost/router_saved_usd` prices the prompts the student answered as the judge would have billed
them (its own price for each prompt, where it can price them all; else the mean price of the prompts it was
paid for in the same stage).

Departures from Trust or Escalate: the cheap judge is a student trained on the expensive judge's verdicts of
this very run, its confidence the agreement of an ensemble (SEA's epistemic uncertainty) rather than simulated
annotators, and an item is a prompt with all of its pair decisions.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields

import torch

from dno.oracles.base import OK, Judgement
from dno.oracles.calibration import cohen_kappa, expected_calibration_error, trust_threshold
from dno.oracles.student import LISTWISE, PAIRWISE, Example, Features, Student, StudentOptions, judgement_of
from dno.pairs import PairRule
from dno.runtime.files import write_jsonl
from dno.runtime.layout import IterationDir, RunDir
from dno.stages.judge import JudgeLimits, check_judgements, judge_metrics
from dno.stages.make_pairs import candidates
from dno.stages.records import Judged, Samples, read_rows, write_rows

log = logging.getLogger(__name__)
KINDS = ("none", "distilled", "random")


@dataclass(frozen=True)
class RouterOptions:
    """`router.*` (conf/router/): which router, its audit and bound, the student and its feature model."""

    kind: str = "none"  # none, distilled, random
    audit_share: float = 0.05  # of each routed iteration's prompts: always judged, the bound is computed on them
    alpha: float = 0.1  # the student's disagreement with the judge above the threshold is at most alpha ...
    delta: float = 0.1  # ... with probability at least 1 - delta
    paid_share: tuple[float, ...] | None = None  # router=random: the paid share of iterations 2, 3, ... (the last
    # one repeats)
    min_train_prompts: int = 32  # fewer paid verdicts to learn from: the judge answers everything
    expected_paid_share: float | None = None  # the plan's paid share of iterations 2, 3, ... (null: measured)
    model: dict = field(default_factory=dict)  # the frozen feature model (a model config)
    batch_size: int = 16
    max_tokens: int = 384
    student: StudentOptions = field(default_factory=StudentOptions)

    @classmethod
    def of(cls, node) -> RouterOptions:
        """The options of a `router` config node (None or absent: no router); bad values raise ValueError."""
        from omegaconf import OmegaConf

        if node is None:
            return cls()
        raw = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"router has no key {sorted(unknown)[0]!r}; keys: {sorted(f.name for f in fields(cls))}")
        share = raw.get("paid_share")
        raw["paid_share"] = None if share is None else tuple(share) if isinstance(share, list | tuple) else (share,)
        raw["student"] = StudentOptions(**(raw.get("student") or {}))
        return cls(**raw)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"router.kind must be one of {KINDS}, got {self.kind!r}")
        if not 0 <= self.audit_share <= 1:
            raise ValueError(f"router.audit_share must be in [0, 1], got {self.audit_share}")
        for key in ("alpha", "delta"):
            if not 0 < getattr(self, key) < 1:
                raise ValueError(f"router.{key} must be in (0, 1), got {getattr(self, key)}")
        if self.kind == "random" and not self.paid_share:
            raise ValueError("router=random needs router.paid_share: the share of prompts the judge answers (a "
                             "number, or one per routed iteration), e.g. the distilled runs' measured share")
        for s in (*(self.paid_share or ()), *([self.expected_paid_share] if self.expected_paid_share is not None
                                              else [])):
            if not 0 <= s <= 1:
                raise ValueError(f"router.paid_share and router.expected_paid_share are shares in [0, 1], got {s}")

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    def share_at(self, t: int) -> float:
        """router=random: the paid share of iteration t (t >= 2)."""
        return self.paid_share[min(t - 2, len(self.paid_share) - 1)]

    def planned_shares(self, measured: list[float], iterations: int) -> tuple[list[float], str]:
        """The plan's paid share of each iteration and where it comes from: 1 without a router; with one, iteration
        1's all, then `expected_paid_share`, else router=random's `paid_share`, else the mean of `measured` (this
        run's routed iterations so far), else every prompt (nothing measured yet)."""
        if not self.enabled:
            return [1.0] * iterations, "no router"
        if self.expected_paid_share is not None:
            later, source = [self.expected_paid_share] * iterations, "router.expected_paid_share"
        elif self.kind == "random":
            later, source = [self.share_at(t) for t in range(2, iterations + 2)], "router.paid_share"
        elif measured:
            later, source = [sum(measured) / len(measured)] * iterations, "measured in this run's routed iterations"
        else:
            later, source = [1.0] * iterations, "nothing measured yet: every prompt (give router.expected_paid_share)"
        return [1.0, *later[: iterations - 1]], source


def decisions(rule: PairRule, row: Judged, judgement: Judgement) -> frozenset[tuple[int, int]]:
    """The pairs (chosen index, rejected index) the rule makes of `row`'s candidates under `judgement`: every
    decision the router must get right (before `schedule.max_pairs_per_prompt`'s cap)."""
    judged = Judged(row.prompt, row.candidates, row.teacher_candidate, judgement, judgement.win_probs())
    cands = candidates(judged)
    index = {id(c): i for i, c in enumerate(cands)}
    return frozenset((index[id(p.chosen)], index[id(p.rejected)]) for p in rule.pairs(cands, judgement))


def pair_labels(chosen: frozenset, n: int) -> list[str]:
    """Per unordered pair of candidates: which way the rule kept it, or not at all (Cohen's kappa's labels)."""
    return [">" if (i, j) in chosen else "<" if (j, i) in chosen else "-" for i in range(n) for j in range(i + 1, n)]


@dataclass
class Prediction:
    """The student's verdict on one prompt: the mean of its heads' scores, the decisions made from it, and the
    share of heads whose own scores make the same decisions."""

    judgement: Judgement
    decisions: frozenset
    confidence: float


class Router:
    """Trains the student on a run's paid verdicts and judges an iteration's samples through it."""

    def __init__(self, options: RouterOptions, cache_dir: str, rule: PairRule, listwise: bool) -> None:
        self.options, self.rule = options, rule
        self.kind = LISTWISE if listwise else PAIRWISE
        self.features = Features(options.model, cache_dir, options.batch_size, options.max_tokens)

    def routes(self, t: int) -> bool:
        """Iteration 1 has no verdict to learn from: every prompt goes to the judge."""
        return self.options.enabled and t > 1

    def features_of(self, d: IterationDir) -> torch.Tensor:
        """The feature vector of every candidate of d's samples, in order (computed once, kept beside them)."""
        rows = read_rows(d.samples, Samples)
        index = [[s.prompt.id, len(Judged.candidates_of(s)[0])] for s in rows]
        if d.student_features.exists():
            saved = torch.load(d.student_features, weights_only=True)
            if saved["identity"] == repr(self.features.identity) and saved["index"] == repr(index):
                return saved["features"]
        items = [(s.prompt, c) for s in rows for c in Judged.candidates_of(s)[0]]
        x = self.features(items, desc=f"student features {d.name}")
        tmp = d.student_features.with_suffix(".tmp")
        torch.save({"identity": repr(self.features.identity), "index": repr(index), "features": x}, tmp)
        tmp.replace(d.student_features)
        return x

    def train(self, run: RunDir, t: int, seed: int) -> dict:
        """The student of iteration t: every paid, valid verdict of iterations 1..t-1, saved in iteration t's folder
        (`IterationDir.student`)."""
        start = time.perf_counter()
        blocks, examples, offset = [], [], 0
        for k in range(1, t):
            dk = run.iteration(k)
            x = self.features_of(dk)
            rows = read_rows(dk.judgements, Judged)
            starts = list(itertools.accumulate((len(r.candidates) for r in rows), initial=offset))[:-1]
            for r, s in zip(rows, starts, strict=True):
                j = r.judgement
                if j.status == OK and j.detail.get("route") != "student":
                    examples.append(Example(list(range(s, s + len(r.candidates))), j.scores, j.prefs))
            blocks.append(x)
            offset += len(x)
        metrics = {"router/train_prompts": len(examples)}
        if len(examples) < self.options.min_train_prompts:
            log.warning("router: %d paid verdicts to learn from, fewer than router.min_train_prompts=%d: the judge "
                        "answers every prompt of iteration %d", len(examples), self.options.min_train_prompts, t)
            return metrics
        if self.kind == LISTWISE and any(ex.scores is None for ex in examples):
            raise ValueError("router: a listwise judge's verdict without scores")
        student = Student.fit(torch.cat(blocks), examples, self.kind, self.options.student, seed)
        student.meta |= {"features": self.features.identity, "iterations": list(range(1, t)),
                         "router": router_identity(self.options)}
        student.save(run.iteration(t).student)
        return metrics | {"router/student_train_s": round(time.perf_counter() - start, 3)}

    def predict(self, student: Student, x: torch.Tensor, rows: list[Judged]) -> list[Prediction]:
        """The student's verdict on each prompt (rows: the prompts' candidates, judgement unset)."""
        scores = student.member_scores(x)
        out, k = [], 0
        for r in rows:
            n = len(r.candidates)
            block = scores[:, k : k + n]
            k += n
            mean = judgement_of(student.kind, block.mean(0).tolist(), {"route": "student"})
            chosen = decisions(self.rule, r, mean)
            agree = sum(decisions(self.rule, r, judgement_of(student.kind, m.tolist(), {})) == chosen for m in block)
            out.append(Prediction(mean, chosen, agree / len(block)))
        return out


def router_identity(options: RouterOptions) -> dict:
    """What a saved student depends on besides its features: a resumed run with other values refuses it."""
    return {"min_train_prompts": options.min_train_prompts, "student": asdict(options.student)}


def _flat(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "random_init" else {f"{prefix}{k}": v}
    return out


def check_students(router: Router, run: RunDir) -> None:
    """A student a resumed run saved with other router settings is refused before any compute, naming the key."""
    if not router.options.enabled:
        return
    now = _flat(router.features.identity | router_identity(router.options), "router.")
    for t in run.iterations():
        meta_file = run.iteration(t).student / "student.json"
        if not meta_file.exists():
            continue
        meta = json.loads(meta_file.read_text())
        saved = _flat(meta.get("features", {}) | meta.get("router", {}), "router.")
        for key in sorted(now.keys() | saved.keys()):
            if now.get(key) != saved.get(key):
                raise ValueError(f"{meta_file.parent}: this student was trained with {key}={saved.get(key)!r}, the "
                                 f"run now has {key}={now.get(key)!r}: put the old value back, or start a new run "
                                 "directory (a changed router must not reuse the old student)")


@dataclass(frozen=True)
class RoutedJudge:
    """One routed judge stage: the router, the paid oracle, the stop limits, the audit's seed."""

    router: Router
    oracle: object
    limits: JudgeLimits
    seed: int


def routed_judgements(job: RoutedJudge, d: IterationDir, t: int) -> dict:
    """Iteration t's judge stage through the router: audit slice and unsure prompts to the paid judge, the
    student's verdict for the rest; writes judgements.jsonl (each judgement's `detail.route` says which) and
    routing.jsonl."""
    options, samples = job.router.options, read_rows(d.samples, Samples)
    rows = [Judged.of(s, Judgement(status="pending")) for s in samples]
    n, rng = len(rows), random.Random(job.seed)
    audit = sorted(rng.sample(range(n), min(n, math.ceil(options.audit_share * n))))
    student = Student.load(d.student) if (d.student / "student.json").exists() else None
    predicted = job.router.predict(student, job.router.features_of(d), rows) if student else None
    paid = dict(zip(audit, job.oracle.judge_many([_item(rows[i]) for i in audit], desc="judging (audit)"),
                    strict=True))
    audit_view = _audit(job.router.rule, rows, predicted, paid) if predicted else []
    route, threshold = _choose(job, t, audit, predicted, audit_view, rng)
    route = route or ["audit" if i in paid else "unrouted" for i in range(n)]
    rest = [i for i in range(n) if route[i] != "student" and i not in paid]
    paid |= dict(zip(rest, job.oracle.judge_many([_item(rows[i]) for i in rest], desc="judging (paid)"), strict=True))
    check_judgements(list(paid.values()), job.limits)
    out = []
    for i, r in enumerate(rows):
        j = paid[i] if i in paid else predicted[i].judgement
        j.detail = {**j.detail, "route": route[i]} | ({"confidence": predicted[i].confidence} if predicted else {})
        out.append(Judged(r.prompt, r.candidates, r.teacher_candidate, j, j.win_probs()))
    write_rows(d.judgements, out)
    write_jsonl(d.routing, [_route_row(r, route[i], predicted[i] if predicted else None, paid.get(i),
                                       job.router.rule) for i, r in enumerate(rows)])
    saved = _saved_usd(job.oracle, [rows[i] for i in range(n) if route[i] == "student"], paid)
    return judge_metrics(out, list(paid.values())) | _router_metrics(route, audit_view, threshold,
                                                                     [len(r.candidates) for r in rows]) | saved


def _item(row: Judged) -> tuple:
    return row.prompt, row.candidates


def _audit(rule: PairRule, rows: list[Judged], predicted: list[Prediction], paid: dict) -> list[tuple]:
    """(prompt index, confidence, the student's decisions, the judge's) of each audited prompt the judge judged
    validly."""
    return [(i, predicted[i].confidence, predicted[i].decisions, decisions(rule, rows[i], j))
            for i, j in paid.items() if j.status == OK]


def _choose(job: RoutedJudge, t: int, audit: list[int], predicted, audit_view: list[tuple], rng) -> tuple:
    """Each prompt's route (audit, escalated, random, unrouted or student) and the threshold (None: none)."""
    options, n = job.router.options, len(predicted) if predicted else 0
    if predicted is None:
        log.warning("router: no student for iteration %d (too few verdicts): the judge answers every prompt", t)
        return None, None
    route = ["student"] * n
    for i in audit:
        route[i] = "audit"
    if options.kind == "random":
        others = [i for i in range(n) if route[i] != "audit"]
        for i in rng.sample(others, max(0, min(len(others), round(options.share_at(t) * n) - len(audit)))):
            route[i] = "random"
        return route, None
    threshold = trust_threshold([a[1] for a in audit_view], [a[2] == a[3] for a in audit_view],
                                options.alpha, options.delta) if audit_view else None
    if threshold is None:
        log.warning("router: the student cannot meet the bound on %d audited prompts (alpha=%s, delta=%s): the "
                    "judge answers every prompt of iteration %d", len(audit_view), options.alpha, options.delta, t)
        return ["audit" if r == "audit" else "unrouted" for r in route], None
    return [r if r == "audit" or predicted[i].confidence >= threshold else "escalated"
            for i, r in enumerate(route)], threshold


def _route_row(row: Judged, route: str, prediction: Prediction | None, paid: Judgement | None,
               rule: PairRule) -> dict:
    """routing.jsonl's row of a prompt: its route, the student's verdict and decisions, the judge's where paid."""
    out = {"prompt_id": row.prompt.id, "route": route}
    if prediction is not None:
        out |= {"confidence": prediction.confidence, "student_scores": prediction.judgement.scores,
                "student_pairs": sorted(map(list, prediction.decisions))}
    if paid is not None:
        out |= {"judge_status": paid.status, "judge_scores": paid.scores}
        if paid.status == OK:
            out["judge_pairs"] = sorted(map(list, decisions(rule, row, paid)))
    return out


def _saved_usd(oracle, answered: list[Judged], paid: dict) -> dict:
    """cost/router_saved_usd: the student's prompts priced as the judge would have billed them (`oracle.price`),
    else at the mean price of the prompts the judge was paid for in the stage."""
    prices = [oracle.price(r.prompt, r.candidates) for r in answered]
    if all(p is not None for p in prices):
        return {"cost/router_saved_usd": float(sum(prices))}
    paid_usd = [j.cost.get("usd", 0) or 0 for j in paid.values() if (j.cost.get("usd", 0) or 0) > 0]
    return {"cost/router_saved_usd": len(answered) * sum(paid_usd) / len(paid_usd) if paid_usd else 0.0}


def _router_metrics(route: list[str], audit_view: list[tuple], threshold: float | None,
                    n_candidates: list[int]) -> dict:
    """router/* of one routed judge stage (see docs/guides/judges.md)."""
    n = len(route)
    student = sum(r == "student" for r in route)
    out = {"router/paid_share": (n - student) / max(n, 1), "router/student_prompts": student,
           "router/audit_prompts": sum(r == "audit" for r in route)}
    if threshold is not None:
        out["router/threshold"] = threshold
    if audit_view:
        conf, ok = [a[1] for a in audit_view], [a[2] == a[3] for a in audit_view]
        out["router/audit_agreement"] = sum(ok) / len(ok)
        union = sum(len(a[2] | a[3]) for a in audit_view)
        out["router/pair_agreement"] = sum(len(a[2] & a[3]) for a in audit_view) / union if union else 1.0
        labels = [(pair_labels(a[2], n_candidates[a[0]]), pair_labels(a[3], n_candidates[a[0]])) for a in audit_view]
        kappa = cohen_kappa([x for s, _ in labels for x in s], [y for _, j in labels for y in j])
        if kappa is not None:
            out["router/audit_kappa"] = kappa
        out["router/ece"] = expected_calibration_error(conf, ok)
    return out


def audit_table(routing) -> list[dict]:
    """The audit slice of a routing.jsonl as rows to read in W&B: the student's and the judge's verdicts."""
    from dno.runtime.files import read_jsonl

    return [{"prompt_id": r["prompt_id"], "confidence": r.get("confidence"),
             "student_scores": str(r.get("student_scores")), "judge_scores": str(r.get("judge_scores")),
             "student_pairs": str(r.get("student_pairs")), "judge_pairs": str(r.get("judge_pairs")),
             "agree": r.get("student_pairs") == r.get("judge_pairs")}
            for r in read_jsonl(routing) if r["route"] == "audit"]
