"""A one-prompt preference game: n responses, P[i][j] = P(i > j), P + P^T = 1, diagonal 1/2.

A policy is a probability vector. P(pi > pi') = pi^T P pi'. The game is symmetric and zero-sum
in P - 1/2, so its value is 1/2 and a Nash equilibrium (von Neumann winner) pi* satisfies
P(y > pi*) <= 1/2 for every response y. Exploitability of pi: max_y P(y > pi) - 1/2 (0 exactly at
an equilibrium; at most 1/2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def check_preference(P: np.ndarray, tol: float = 1e-6) -> np.ndarray:
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2:
        raise ValueError(f"a preference matrix is square with at least 2 responses, got shape {P.shape}")
    if np.any(P < -tol) or np.any(P > 1 + tol):
        raise ValueError("preference entries are probabilities in [0, 1]")
    if np.max(np.abs(P + P.T - 1)) > tol:
        i, j = np.unravel_index(np.argmax(np.abs(P + P.T - 1)), P.shape)
        raise ValueError(f"P + P^T must be 1: P[{i}][{j}] + P[{j}][{i}] = {P[i, j] + P[j, i]:.6f}")
    return P


def load_preference(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """A CSV with a header row of response names and one row per response (first cell: its name), or a
    plain matrix of numbers (what `numpy.savetxt` writes, comma- or space-separated): responses 0..n-1."""
    text = Path(path).read_text().strip()
    first = text.splitlines()[0].replace(",", " ").split() if text else []
    try:
        [float(c) for c in first]
        plain = bool(first)
    except ValueError:
        plain = False
    if plain:
        P = np.atleast_2d(np.loadtxt(path, delimiter="," if "," in text.splitlines()[0] else None, ndmin=2))
        return check_preference(P), [str(i) for i in range(P.shape[0])]
    lines = [line.split(",") for line in text.splitlines()]
    names = [c.strip() for c in lines[0][1:]]
    rows = [[float(c) for c in line[1:]] for line in lines[1:]]
    if [line[0].strip() for line in lines[1:]] != names:
        raise ValueError(f"{path}: row names must repeat the header's, in order")
    return check_preference(np.array(rows)), names


def save_preference(path: str | Path, P: np.ndarray, names: list[str]) -> None:
    rows = [",".join(["", *names])]
    rows += [",".join([n, *(f"{x:.6g}" for x in row)]) for n, row in zip(names, P, strict=True)]
    Path(path).write_text("\n".join(rows) + "\n")


def win_rate(P: np.ndarray, pi: np.ndarray, other: np.ndarray) -> float:
    """P(pi > other)."""
    return float(pi @ P @ other)


def exploitability(P: np.ndarray, pi: np.ndarray) -> float:
    return float(np.max(P @ pi) - 0.5)


def kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(q[mask]))))


def nash(P: np.ndarray) -> np.ndarray:
    """A von Neumann winner by linear programming: max v s.t. (P^T pi)_j >= v for all j, pi in the simplex."""
    from scipy.optimize import linprog

    n = P.shape[0]
    c = np.zeros(n + 1)
    c[-1] = -1.0  # maximise v
    a_ub = np.hstack([-P.T, np.ones((n, 1))])  # v - sum_i pi_i P[i, j] <= 0
    a_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(n), A_eq=a_eq, b_eq=[1.0],
                  bounds=[(0, None)] * n + [(None, None)], method="highs")
    if not res.success:
        raise RuntimeError(f"linear program failed: {res.message}")
    pi = np.clip(res.x[:n], 0, None)
    return pi / pi.sum()
