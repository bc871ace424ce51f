"""Machine-checkable instruction constraints: how each is phrased and how it is checked.

A constraint is data, `{"kind": "max_words", "value": 25}`, so that a prompt record carries its
own rubric. The builtin generator phrases them (`describe`) and the rules oracle checks them
(`check`); both read this one table so the two can never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

WORD_RE = re.compile(r"[A-Za-z0-9']+")
BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+\S")


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, flags=re.IGNORECASE) is not None


def _first_word(text: str) -> str:
    found = words(text)
    return found[0].lower() if found else ""


@dataclass(frozen=True)
class Kind:
    describe: Callable[[object], str]
    check: Callable[[str, object], bool]


PUNCT_NAMES = {"?": "a question mark", "!": "an exclamation mark", ".": "a period"}

KINDS: dict[str, Kind] = {
    "max_words": Kind(lambda n: f"Answer in fewer than {n} words.", lambda t, n: len(words(t)) < n),
    "min_words": Kind(lambda n: f"Answer in at least {n} words.", lambda t, n: len(words(t)) >= n),
    "lowercase": Kind(
        lambda _: "Use only lowercase letters.",
        lambda t, _: any(c.isalpha() for c in t) and not any(c.isupper() for c in t),
    ),
    "include_word": Kind(lambda w: f'Include the word "{w}".', lambda t, w: _has_word(t, w)),
    "avoid_word": Kind(lambda w: f'Do not use the word "{w}".', lambda t, w: not _has_word(t, w)),
    "no_commas": Kind(lambda _: "Do not use any commas.", lambda t, _: "," not in t),
    "bullets": Kind(
        lambda n: f'Answer with exactly {n} bullet points, each on its own line starting with "- ".',
        lambda t, n: sum(bool(BULLET_RE.match(line)) for line in t.splitlines()) == n,
    ),
    "end_with": Kind(
        lambda p: f"End your answer with {PUNCT_NAMES[p]}.", lambda t, p: t.rstrip().endswith(p)
    ),
    "start_with": Kind(
        lambda w: f'Start your answer with the word "{w}".', lambda t, w: _first_word(t) == w.lower()
    ),
}


def describe(constraint: dict) -> str:
    return KINDS[constraint["kind"]].describe(constraint.get("value"))


def check(response: str, constraint: dict) -> bool:
    kind = KINDS.get(constraint["kind"])
    if kind is None:
        raise ValueError(f"unknown constraint kind {constraint['kind']!r}; known: {sorted(KINDS)}")
    return bool(kind.check(response, constraint.get("value")))


def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for no repetition, near 1 for a loop."""
    tokens = [w.lower() for w in words(text)]
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
