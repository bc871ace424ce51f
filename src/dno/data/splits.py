"""Disjoint splits of a prompt set: test (final evaluation), validation (model selection) and one
partition per DNO iteration, as Algorithm 2 of arXiv 2404.03715 draws fresh prompts each iteration."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Splits:
    test: list[dict]
    val: list[dict]
    iterations: list[list[dict]]  # iterations[t - 1] holds the prompts of iteration t


def make_splits(
    records: list[dict], *, iterations: int, per_iteration: int | None, n_val: int, n_test: int, seed: int
) -> Splits:
    """Shuffle once with `seed`, then cut test, validation and the per-iteration partitions.

    `per_iteration=None` divides everything left equally between the iterations.
    """
    pool = list(records)
    random.Random(seed).shuffle(pool)
    test, val, rest = pool[:n_test], pool[n_test : n_test + n_val], pool[n_test + n_val :]
    if per_iteration is None:
        per_iteration = len(rest) // iterations
    need = n_test + n_val + per_iteration * iterations
    if per_iteration < 1 or need > len(records):
        raise ValueError(
            f"the data has {len(records)} prompts but the schedule needs {need} "
            f"({n_test} test + {n_val} validation + {iterations} iterations x {per_iteration}); "
            "lower the schedule's sizes or give the data more prompts"
        )
    parts = [rest[i * per_iteration : (i + 1) * per_iteration] for i in range(iterations)]
    return Splits(test=test, val=val, iterations=parts)
