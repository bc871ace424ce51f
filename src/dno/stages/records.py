"""The rows of a run's files, defined once: what each field is, how a row is read and written, and how
rows of older format versions are read.

    samples.jsonl          Samples     a prompt and K answers of pi_t
    judgements.jsonl       Judged      the candidates (the K answers, and the teacher's when there is one),
                                       the oracle's Judgement and r_t of each candidate (`win_probs`)
    pairs.jsonl            PairRow     chosen over rejected, r_t of both, pi_t's log-probs of both
    eval_judgements.jsonl  Validation  P(pi_{t+1} > pi_1) and P(pi_{t+1} > pi_t) of a validation prompt

A row is a frozen dataclass: a misspelled field fails where it is written (TypeError) or read
(AttributeError), and a file row with a field this code does not know fails naming the file, the
row and the field. Every row carries the format version it was written in.

Versions: 1, before the names followed the paper's symbols (`chosen_win_rate`, `ref_logp_chosen`,
`gold`); 2, the prompt's fields flat in the row (`instruction`, `system`) and the teacher's answer
the last candidate by convention; 3 (today), the prompt a `Prompt` (a messages list) under `prompt`
and the teacher's candidate named by `teacher_candidate`. Rows of versions 1 and 2 are read into
today's types; a newer version than this code knows is an error that says what to do.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from dno.data import Prompt
from dno.oracles.base import Judgement
from dno.runtime.files import read_jsonl, write_jsonl

VERSION = 3
_V1_RENAMES = {"chosen_win_rate": "chosen_win_prob", "rejected_win_rate": "rejected_win_prob",
               "ref_logp_chosen": "ref_chosen_logps", "ref_logp_rejected": "ref_rejected_logps",
               "win_rates": "win_probs", "gold": "teacher"}


class RecordError(ValueError):
    """A file row that this code cannot read; the message names the file, the row and the field."""


@dataclass(frozen=True)
class Samples:
    """A prompt and pi_t's answers to it (K in an iteration, one for validation and test)."""

    prompt: Prompt
    responses: list[str]

    def to_json(self) -> dict:
        return {"version": VERSION, "prompt": self.prompt.to_json(), "responses": self.responses}

    @classmethod
    def from_json(cls, row: dict) -> Samples:
        if row.get("version", 2) < 3:  # v1/v2: the prompt's fields flat in the row
            row = _renamed(row)
            row = {"prompt": _legacy_prompt({k: v for k, v in row.items() if k != "responses"}),
                   "responses": row["responses"]}
        row = _known(cls, row)
        return cls(Prompt.from_json(row["prompt"]), row["responses"])


@dataclass(frozen=True)
class Judged:
    """A prompt's candidates as the oracle judged them (Algorithm 2, step 3).

    `candidates`: the K answers of pi_t, then the teacher's answer when the prompt has one;
    `teacher_candidate`: the index of the teacher's answer among them (None: no teacher answer);
    `win_probs`: r_t(x, y) of each candidate, its expected probability of beating the others (None
    when the judgement is not ok)."""

    prompt: Prompt
    candidates: list[str]
    teacher_candidate: int | None
    judgement: Judgement
    win_probs: list[float] | None

    @classmethod
    def of(cls, samples: Samples, judgement: Judgement) -> Judged:
        """The judgement of `Judged.candidates_of(samples)`."""
        candidates, teacher = cls.candidates_of(samples)
        return cls(samples.prompt, candidates, teacher, judgement, judgement.win_probs())

    @staticmethod
    def candidates_of(samples: Samples) -> tuple[list[str], int | None]:
        """What the oracle judges for a prompt: the K answers, then the teacher's answer (and its index)."""
        teacher = samples.prompt.teacher
        if not teacher:
            return list(samples.responses), None
        return [*samples.responses, teacher], len(samples.responses)

    @property
    def responses(self) -> list[str]:
        """The students' answers: the candidates but the teacher's."""
        return [c for i, c in enumerate(self.candidates) if i != self.teacher_candidate]

    def is_teacher(self, i: int) -> bool:
        return i == self.teacher_candidate

    def to_json(self) -> dict:
        return {"version": VERSION, "prompt": self.prompt.to_json(), "candidates": self.candidates,
                "teacher_candidate": self.teacher_candidate, "judgement": self.judgement.to_dict(),
                "win_probs": self.win_probs}

    @classmethod
    def from_json(cls, row: dict) -> Judged:
        if row.get("version", 1) < 3:  # v1/v2: the teacher's answer, when there was one, followed the responses
            row = _renamed(row)
            responses = row["responses"]
            rest = {k: v for k, v in row.items() if k not in ("responses", "candidates", "judgement", "win_probs")}
            row = {"prompt": _legacy_prompt(rest), "candidates": row["candidates"], "judgement": row["judgement"],
                   "win_probs": row["win_probs"],
                   "teacher_candidate": len(responses) if len(row["candidates"]) > len(responses) else None}
        row = _known(cls, row)
        return cls(Prompt.from_json(row["prompt"]), row["candidates"], row["teacher_candidate"],
                   Judgement.from_dict(row["judgement"]), row["win_probs"])


@dataclass(frozen=True)
class PairRow:
    """One training pair (Algorithm 2, step 4): the chosen answer y+ over the rejected y-.

    `type`: which of the paper's kinds (teacher_over_student, ...); `source_iteration`: the iteration
    whose samples made it (earlier than the file's for replayed pairs); `*_score`: the judge's scores
    (a pairwise judge's: r_t); `ref_*_logps`: log pi_t(y | x) summed over the answer's tokens, the
    reference of Eq. 13, filled by the reference stage (None before it, or without a reference)."""

    prompt: Prompt
    chosen: str
    rejected: str
    chosen_win_prob: float
    rejected_win_prob: float
    type: str
    source_iteration: int
    chosen_score: float | None = None
    rejected_score: float | None = None
    ref_chosen_logps: float | None = None
    ref_rejected_logps: float | None = None

    def with_reference(self, chosen: float | None, rejected: float | None) -> PairRow:
        """The pair with pi_t's log-probs (None, None: without, e.g. replayed into a later iteration)."""
        return replace(self, ref_chosen_logps=chosen, ref_rejected_logps=rejected)

    def to_json(self) -> dict:
        return {"version": VERSION, **asdict(self), "prompt": self.prompt.to_json()}

    @classmethod
    def from_json(cls, row: dict) -> PairRow:
        if row.get("version", 1) < 3:  # v1/v2: the prompt's fields flat, under prompt_id
            row = _renamed(row)
            prompt = Prompt.of(row.pop("prompt_id"), row.pop("instruction"), row.pop("system", None))
            row = {**row, "prompt": prompt.to_json()}
        return cls(**{**_known(cls, row), "prompt": Prompt.from_json(row["prompt"])})


@dataclass(frozen=True)
class Validation:
    """A validation prompt's judgement of pi_{t+1}: P(pi_{t+1} > pi_1), P(pi_{t+1} > pi_t) (None: not valid)."""

    id: str
    vs_init: float | None
    vs_prev: float | None

    def to_json(self) -> dict:
        return {"version": VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, row: dict) -> Validation:
        return cls(**_known(cls, row))


def _renamed(row: dict) -> dict:
    return {_V1_RENAMES.get(k, k): v for k, v in row.items() if k != "version"}


def _legacy_prompt(flat: dict) -> dict:
    """A version 1/2 row's flat prompt fields as a Prompt's: id, instruction, system, teacher; the rest is meta."""
    meta = {k: v for k, v in flat.items() if k not in ("id", "instruction", "system", "teacher")}
    return Prompt.of(flat["id"], flat["instruction"], flat.get("system"), teacher=flat.get("teacher"),
                     meta=meta).to_json()


def _known(cls, row: dict) -> dict:
    """`row` without its version, checked to hold no field that `cls` does not have."""
    row = {k: v for k, v in row.items() if k != "version"}
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(row) - names)
    if unknown:
        raise RecordError(f"unknown field {unknown[0]!r} (a {cls.__name__} row has {', '.join(sorted(names))})")
    return row


def write_rows(path: Path, rows: list) -> None:
    """Rows of one type, one JSON object a line, written atomically."""
    write_jsonl(path, [r.to_json() for r in rows])


def read_rows(path: Path, kind: type) -> list:
    """The rows of `path` as `kind` (Samples, Judged, PairRow, Validation), from any known format version."""
    rows = []
    for i, row in enumerate(read_jsonl(path), start=1):
        version = row.get("version", 1)
        if not isinstance(version, int) or version > VERSION:
            raise RecordError(f"{path}, row {i}: format version {version!r}, but this code reads versions 1 to "
                              f"{VERSION}: update dno, or re-run the stage in a new run directory")
        try:
            rows.append(kind.from_json(row))
        except (KeyError, TypeError, ValueError) as e:
            what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            raise RecordError(f"{path}, row {i}: not a {kind.__name__} row: {what}") from None
    return rows
