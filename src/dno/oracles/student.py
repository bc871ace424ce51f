"""A preference model trained on the judge's own verdicts: frozen features, an ensemble of small heads.

    features = Features(model_cfg, cache_dir)              # a frozen LM: one vector per (prompt, answer)
    student = Student.fit(examples, kind="listwise", options=StudentOptions(), seed=0)
    scores = student.member_scores(features(items))        # (members, N): every head's score of every answer
    student.save(path); Student.load(path)

The judge's verdicts are what it learns: a listwise judge's score of each candidate (regressed), or a
pairwise judge's P(a > b) (Bradley-Terry: P = sigmoid(r_a - r_b), so both orders of a pair are the same
example). Its uncertainty is epistemic, as SEA's (sail-sg/oat, arXiv 2411.01493): `members` heads, each
initialised from its own seed and trained on its own bootstrap of the prompts; where they disagree the
student does not know. `dno.stages.route` asks it before the paid judge; `oracle=student` makes a saved
student a judge of its own (`StudentOracle`: free, offline).

Features: the frozen model reads the prompt and the answer through its chat template; the vector is the
answer tokens' mean hidden state at the middle and the last layer, the last token's last hidden state, and
log(1 + answer tokens). Departures from SEA: the heads are trained from scratch at every judge stage on every
verdict so far (no online updates), and the features are a causal LM's (SEA: a reward model's).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dno.data import Prompt
from dno.oracles.base import Judgement, Oracle, all_pairs

LISTWISE, PAIRWISE = "listwise", "pairwise"
STUDENT_FORMAT = 1


@dataclass(frozen=True)
class StudentOptions:
    """The ensemble (`router.student.*`): heads, their width, their training."""

    members: int = 8  # heads of the ensemble: its disagreement is the uncertainty
    hidden: int = 128  # each head's hidden width
    steps: int = 500  # full-batch AdamW steps per head
    lr: float = 1e-2
    weight_decay: float = 1e-3
    bootstrap: bool = True  # each head trains on its own resample of the prompts (False: all of them)

    def __post_init__(self) -> None:
        if self.members < 2:
            raise ValueError(f"router.student.members must be at least 2 (an ensemble), got {self.members}")
        for key in ("hidden", "steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"router.student.{key} must be at least 1, got {getattr(self, key)}")


@dataclass(frozen=True)
class Example:
    """One prompt's verdict as the student learns it: its candidates' rows in the feature matrix, and either a
    listwise judge's `scores` or a pairwise judge's `prefs` (prefs[i][j] = P(i > j), None where not asked)."""

    rows: list[int]
    scores: list[float] | None = None
    prefs: list[list[float | None]] | None = None


class Features:
    """A frozen causal LM's view of (prompt, answer): see the module docstring.

    Args:
        model: a model config (`path`, `tokenizer`, `dtype`, `random_init`), as `model=` configs are.
        cache_dir: where a GGUF model is de-quantised once.
        batch_size: answers per forward pass.
        max_tokens: prompt and answer are cut to this many tokens together (the answer's start is kept).
    """

    def __init__(self, model, cache_dir: str, batch_size: int = 16, max_tokens: int = 384) -> None:
        self.model_cfg = model if OmegaConf.is_config(model) else OmegaConf.create(model)
        self.cache_dir, self.batch_size, self.max_tokens = cache_dir, batch_size, max_tokens
        self.model = self.tokenizer = None

    @property
    def identity(self) -> dict:
        """What the features depend on: a saved student is used only with the same."""
        cfg = OmegaConf.to_container(self.model_cfg, resolve=True)
        return {"model": {k: cfg.get(k) for k in ("path", "tokenizer", "random_init", "init_seed", "dtype")},
                "max_tokens": self.max_tokens}

    def load(self):
        if self.model is None:
            from transformers import AutoModel

            from dno.policy.load import load_model, load_tokenizer

            self.tokenizer = load_tokenizer(self.model_cfg.get("tokenizer") or self.model_cfg.path, self.cache_dir)
            self.model = load_model(self.model_cfg, self.cache_dir, self.tokenizer, auto_class=AutoModel).eval()
        return self.model, self.tokenizer

    def encode(self, items: list[tuple[Prompt, str]]) -> list[tuple[list[int], list[int]]]:
        from dno.policy.load import prompt_ids, response_ids

        _, tok = self.load()
        out = []
        for prompt, answer in items:
            head = prompt_ids(tok, prompt.messages)[-(self.max_tokens // 2):]
            out.append((head, response_ids(tok, answer, self.max_tokens - len(head))))
        return out

    @torch.inference_mode()
    def __call__(self, items: list[tuple[Prompt, str]], desc: str = "student features") -> torch.Tensor:
        """One row per (prompt, answer), in order. Shape: (N, 3 * hidden + 1)."""
        from tqdm.auto import tqdm

        from dno.policy.logps import collate

        model, tok = self.load()
        encoded = self.encode(items)
        order = sorted(range(len(encoded)), key=lambda i: sum(map(len, encoded[i])))
        rows: list[torch.Tensor | None] = [None] * len(encoded)
        for start in tqdm(range(0, len(order), self.batch_size), desc=desc, unit="batch", leave=False):
            idx = order[start : start + self.batch_size]
            batch = collate([encoded[i] for i in idx], tok.pad_token_id)
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           output_hidden_states=True).hidden_states
            mask = batch["loss_mask"].unsqueeze(-1).float()
            n = mask.sum(1).clamp(min=1)
            last = batch["attention_mask"].sum(1) - 1
            middle = hidden[len(hidden) // 2]
            vec = torch.cat([(middle.float() * mask).sum(1) / n, (hidden[-1].float() * mask).sum(1) / n,
                             hidden[-1].float()[torch.arange(len(idx)), last], torch.log1p(n)], dim=-1)
            for k, i in enumerate(idx):
                rows[i] = vec[k]
        return torch.stack(rows) if rows else torch.zeros(0, 1)


def _heads(dim: int, options: StudentOptions, seed: int) -> list[torch.nn.Module]:
    heads = []
    for m in range(options.members):
        torch.manual_seed(seed * 1000 + m)
        heads.append(torch.nn.Sequential(torch.nn.Linear(dim, options.hidden), torch.nn.GELU(),
                                         torch.nn.Linear(options.hidden, 1)))
    return heads


def _pair_targets(examples: list[Example]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every asked pair of every pairwise example: (rows of a, rows of b, P(a > b))."""
    a, b, p = [], [], []
    for ex in examples:
        for i, j in all_pairs(len(ex.rows)):
            pij = ex.prefs[i][j] if ex.prefs[i][j] is not None else (
                None if ex.prefs[j][i] is None else 1.0 - ex.prefs[j][i])
            if pij is not None:
                a.append(ex.rows[i])
                b.append(ex.rows[j])
                p.append(pij)
    return torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long), torch.tensor(p)


@dataclass
class Student:
    """The trained ensemble with the feature scaling it was trained under, and what it learnt from."""

    kind: str  # listwise (regresses the judge's scores) or pairwise (P(a > b) of rewards)
    heads: list[torch.nn.Module]
    mean: torch.Tensor  # feature standardisation
    std: torch.Tensor
    target_mean: float = 0.0  # listwise: scores are regressed standardised
    target_std: float = 1.0
    meta: dict | None = None  # options, seed, features' identity, verdicts trained on, the judge's name

    @classmethod
    def fit(cls, features: torch.Tensor, examples: list[Example], kind: str, options: StudentOptions,
            seed: int) -> Student:
        """Heads trained on `examples` (rows of `features`), each on its own bootstrap of the prompts."""
        if kind not in (LISTWISE, PAIRWISE):
            raise ValueError(f"a student is listwise or pairwise, not {kind!r}")
        mean, std = features.mean(0), features.std(0).clamp(min=1e-6) if len(features) > 1 else torch.ones(1)
        x = (features - mean) / std
        targets = torch.tensor([s for ex in examples for s in ex.scores]) if kind == LISTWISE else None
        t_mean, t_std = (float(targets.mean()), float(targets.std().clamp(min=1e-6))) if targets is not None \
            else (0.0, 1.0)
        heads = _heads(x.shape[1], options, seed)
        rng = random.Random(seed)
        for head in heads:
            drawn = [rng.choice(examples) for _ in examples] if options.bootstrap else examples
            _train_head(head, x, drawn, kind, (t_mean, t_std), options)
        return cls(kind, heads, mean, std, t_mean, t_std, {"options": asdict(options), "seed": seed,
                                                           "trained_on_prompts": len(examples)})

    @torch.no_grad()
    def member_scores(self, features: torch.Tensor) -> torch.Tensor:
        """Every head's score of every row (listwise: on the judge's scale; pairwise: a reward). Shape: (M, N)."""
        x = (features - self.mean) / self.std
        return torch.stack([h(x).squeeze(-1) for h in self.heads]) * self.target_std + self.target_mean

    def save(self, path: Path) -> None:
        """The heads' weights and scaling (student.pt) and what it is (student.json), written atomically."""
        from dno.runtime.files import write_json

        path.mkdir(parents=True, exist_ok=True)
        state = {"heads": [h.state_dict() for h in self.heads], "mean": self.mean, "std": self.std,
                 "target": [self.target_mean, self.target_std]}
        tmp = path / "student.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "student.pt")
        write_json(path / "student.json", {"format": STUDENT_FORMAT, "kind": self.kind, **(self.meta or {})})

    @classmethod
    def load(cls, path: str | Path) -> Student:
        path = Path(path)
        if not (path / "student.json").exists() or not (path / "student.pt").exists():
            raise FileNotFoundError(f"{path}: no student here (student.json and student.pt: a run's "
                                    "student folder of an iteration with router=distilled or random)")
        meta = json.loads((path / "student.json").read_text())
        if meta.get("format") != STUDENT_FORMAT:
            raise ValueError(f"{path}: student format {meta.get('format')}, this code reads {STUDENT_FORMAT}")
        state = torch.load(path / "student.pt", weights_only=True)
        options = StudentOptions(**meta["options"])
        heads = _heads(state["mean"].shape[0], options, 0)
        for head, weights in zip(heads, state["heads"], strict=True):
            head.load_state_dict(weights)
        return cls(meta["kind"], heads, state["mean"], state["std"], *state["target"], meta=meta)


def _train_head(head: torch.nn.Module, x: torch.Tensor, examples: list[Example], kind: str,
                target: tuple[float, float], options: StudentOptions) -> None:
    opt = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    if kind == LISTWISE:
        rows = torch.tensor([r for ex in examples for r in ex.rows], dtype=torch.long)
        y = (torch.tensor([s for ex in examples for s in ex.scores]) - target[0]) / target[1]
    else:
        a, b, p = _pair_targets(examples)
    for _ in range(options.steps):
        opt.zero_grad()
        if kind == LISTWISE:
            loss = torch.nn.functional.mse_loss(head(x[rows]).squeeze(-1), y)
        else:
            margin = head(x[a]).squeeze(-1) - head(x[b]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, p)
        loss.backward()
        opt.step()


def judgement_of(kind: str, scores: list[float], detail: dict) -> Judgement:
    """A student's answer in the judge's own form: listwise scores, or pairwise P(i > j) = sigmoid(r_i - r_j)."""
    if kind == LISTWISE:
        return Judgement(scores=scores, cost={"calls": 0, "usd": 0.0}, detail=detail)
    n = len(scores)
    prefs = [[None if i == j else 1.0 / (1.0 + math.exp(scores[j] - scores[i])) for j in range(n)] for i in range(n)]
    return Judgement(scores=scores, prefs=prefs, cost={"calls": 0, "usd": 0.0}, detail=detail)


class StudentOracle(Oracle):
    """`oracle=student oracle.path=RUN/iter_<t>/student_judge`: a saved student as a judge (free, offline): the mean
    of its heads' scores, in the form of the judge it learnt from.

    Args:
        path: the student's folder (student.json, student.pt).
        cache_dir: where its feature model (named in student.json) is de-quantised once.
        batch_size: answers per forward pass of the feature model.
    """

    def __init__(self, path: str, cache_dir: str, batch_size: int = 16) -> None:
        self.path, self.cache_dir, self.batch_size = path, cache_dir, batch_size
        self.student = self.features = None

    @property
    def is_listwise(self) -> bool:  # type: ignore[override]
        return self._load().kind == LISTWISE

    def check(self) -> None:
        try:
            self._load()
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise ValueError(f"oracle.path: {e}") from None

    def _load(self) -> Student:
        if self.student is None:
            self.student = Student.load(self.path)
            ident = self.student.meta["features"]
            self.features = Features(ident["model"], self.cache_dir, self.batch_size, ident["max_tokens"])
        return self.student

    def judge(self, prompt, candidates, pairs=None) -> Judgement:
        return self.judge_many([(prompt, candidates)], pairs)[0]

    def judge_many(self, items, pairs=None, desc="student judging") -> list[Judgement]:
        student = self._load()
        flat = [(p, c) for p, cands in items for c in cands]
        mean = student.member_scores(self.features(flat, desc)).mean(0).tolist() if flat else []
        out, k = [], 0
        for _, cands in items:
            out.append(judgement_of(student.kind, mean[k : k + len(cands)], {"source": "student"}))
            k += len(cands)
        return out
