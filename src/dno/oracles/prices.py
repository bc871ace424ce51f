"""The judge's prices as data: conf/prices/openai.yaml, a row per model with its source date.

    price_of("gpt-4o-mini-2024-07-18")   # Price(input=0.15, cached_input=0.075, output=0.6, ...)

A model is found by its exact name, then with a trailing snapshot date (`-2024-07-18`) taken off; never by a
prefix (a prefix priced gpt-4o-mini as gpt-4o, and gpt-4.1-mini as gpt-4.1). A model the table does not know
raises UnknownPrice: a run billed by OpenAI must say what it pays (`oracle.price_input_per_1m`, ...).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

PRICES_FILE = Path(__file__).resolve().parents[3] / "conf" / "prices" / "openai.yaml"
SNAPSHOT_DATE = re.compile(r"-\d{4}-\d{2}-\d{2}$")


class UnknownPrice(ValueError):
    """The price table has no row for the model, and the config gives no price."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens: prompt tokens, prompt tokens served from the provider's cache, completion tokens."""

    input: float
    output: float
    cached_input: float | None = None  # None: no cached rate (cached tokens cost the input price)
    model: str = ""  # the table's row (or "config" for prices the config gives)
    date: str = ""  # the date of the price

    def usd(self, usage: dict) -> float:
        """USD of one answer's tokens (cached prompt tokens at the cached rate)."""
        cached = usage.get("cached_tokens", 0) or 0
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((usage.get("prompt_tokens", 0) - cached) * self.input + cached * cached_rate
                + usage.get("completion_tokens", 0) * self.output) / 1e6


@functools.cache
def table() -> dict[str, Price]:
    """Every row of conf/prices/openai.yaml."""
    import yaml

    rows = yaml.safe_load(PRICES_FILE.read_text())["models"]
    return {name: Price(float(r["input"]), float(r["output"]), None if r.get("cached_input") is None
                        else float(r["cached_input"]), name, str(r.get("date", ""))) for name, r in rows.items()}


def price_of(model: str) -> Price:
    """The table's price of `model`: its exact name, else without a trailing snapshot date; else UnknownPrice."""
    rows = table()
    for name in (model, SNAPSHOT_DATE.sub("", model)):
        if name in rows:
            return rows[name]
    raise UnknownPrice(f"no price for the judge model {model!r} in {PRICES_FILE}: add its row (with the date of the "
                       f"price) or give oracle.price_input_per_1m and oracle.price_output_per_1m")
