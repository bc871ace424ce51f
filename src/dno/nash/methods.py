"""The update rules compared on a tabular preference game, each from pi_1 for T iterations.

- `dno_exact`: Algorithm 1 with exact expectations, pi_{t+1} ∝ pi_t exp(r_t / eta), r_t = P pi_t.
- `dno`: Eq. 8 from N sampled pairs: y1, y2 ~ pi_t (on-policy; `explore` mixes in the uniform
  distribution, which Algorithm 1 allows); each r_t(y) is estimated from
  `opponents` draws y' ~ pi_t with labels drawn from P (Bernoulli(P[y][y'])); the policy is a
  softmax over logits fitted to the soft targets sigma(r1 - r2) by L-BFGS (the loss is convex in
  the logits: the log-partition cancels in a pair). Its L1 distance to the exact update from the
  same pi_t is the regression error of Theorem 1.
- `dno_prct`: Eq. 13 (the DPO loss, reference pi_t) on the pairs whose estimated r differ by at
  least `margin`, the winner first; its minimiser is at infinity, so it takes `steps` gradient
  steps of size `lr` (the paper's "at most one epoch").
- `bt_reward`: a Bradley-Terry reward fitted once to N labelled pairs drawn uniformly (an RLHF
  reward model), then KL-regularised reward maximisation against the previous iterate,
  pi_{t+1} ∝ pi_t exp(r / eta): what iterative DPO against a point-wise reward converges to.
- `sppo`: SPPO's update (Wu et al., 2024) from N samples of pi_t: log pi(y) - log pi_t(y)
  regressed (squared loss) onto (r_t(y) - 1/2) / eta, with r_t estimated as for `dno`.

Each returns the iterates pi_1..pi_{T+1} and, for the sampled regressions, the per-iteration
L1 distance to the exact update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit


@dataclass(frozen=True)
class Game:
    """What every method is given: the preference matrix P (P[i, j] = P(y_i > y_j)), the start pi_1, the
    number of iterations T and the paper's eta."""

    P: np.ndarray
    pi1: np.ndarray
    T: int
    eta: float


@dataclass(frozen=True)
class Sampled:
    """How the sampled methods draw and fit (dno-nash's keys of these names).

    Attributes:
        pairs: pairs (or samples) drawn per iteration.
        opponents: draws y' ~ pi_t that estimate each r_t(y).
        margin: dno_prct keeps the pairs whose estimated r_t differ by at least this.
        steps, lr: dno_prct's gradient steps per iteration and their size.
        explore: the sampling distribution mixes in the uniform one by this share.
    """

    pairs: int = 1000
    opponents: int = 4
    margin: float = 0.25
    steps: int = 20
    lr: float = 1.0
    explore: float = 0.0


@dataclass
class Trajectory:
    iterates: list[np.ndarray]
    regression_error: list[float] = field(default_factory=list)


def logsumexp(x: np.ndarray) -> float:
    """log sum exp of a small vector (scipy's general version costs ~100 us a call, 20x this)."""
    m = x.max()
    return float(m + np.log(np.exp(x - m).sum()))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(logits - logsumexp(logits))


def exact_step(P: np.ndarray, logpi: np.ndarray, eta: float) -> np.ndarray:
    """log pi*_{t+1}: soft policy iteration, pi_t exp(r_t / eta) normalised (Eq. 9)."""
    logits = logpi + (P @ softmax(logpi)) / eta
    return logits - logsumexp(logits)


def estimate_r(P: np.ndarray, pi: np.ndarray, ys: np.ndarray, opponents: int, rng) -> np.ndarray:
    """r_t(y) for each y of `ys`: the share of wins in `opponents` games against y' ~ pi."""
    opp = rng.choice(len(pi), size=(len(ys), opponents), p=pi)
    return (rng.random((len(ys), opponents)) < P[ys[:, None], opp]).mean(axis=1)


def pair_gradient(n: int, first: np.ndarray, second: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient on n logits of a loss whose per-pair derivative is g for logit[first] - logit[second]."""
    grad = np.zeros(n)
    np.add.at(grad, first, g)
    np.add.at(grad, second, -g)
    return grad


def _run(g: Game, step) -> Trajectory:
    logpi, out = np.log(g.pi1), Trajectory([g.pi1])
    for _ in range(g.T):
        logpi, err = step(logpi)
        logpi = logpi - logsumexp(logpi)
        out.iterates.append(softmax(logpi))
        if err is not None:
            out.regression_error.append(err)
    return out


def dno_exact(g: Game, o: Sampled, rng) -> Trajectory:
    return _run(g, lambda logpi: (exact_step(g.P, logpi, g.eta), None))


def fit_eq8(logpi: np.ndarray, y1: np.ndarray, y2: np.ndarray, target: np.ndarray, eta: float) -> np.ndarray:
    """Logits minimising Eq. 8's cross-entropy between sigma(eta h) and `target`, reference pi_t."""
    def loss(theta):
        h = eta * ((theta[y1] - theta[y2]) - (logpi[y1] - logpi[y2]))
        value = -np.mean(target * log_expit(h) + (1 - target) * log_expit(-h))
        return value, pair_gradient(len(theta), y1, y2, eta * (expit(h) - target) / len(h))

    return minimize(loss, logpi.copy(), jac=True, method="L-BFGS-B").x


def sampler(pi: np.ndarray, explore: float) -> np.ndarray:
    """Where pairs are drawn: pi_t, mixed with the uniform distribution by `explore`. Eq. 8 is a
    regression, so this changes only which responses it sees, not its target."""
    return (1 - explore) * pi + explore / len(pi)


def dno(g: Game, o: Sampled, rng) -> Trajectory:
    P, eta = g.P, g.eta

    def step(logpi):
        pi = softmax(logpi)
        mu = sampler(pi, o.explore)
        y1, y2 = rng.choice(len(pi), o.pairs, p=mu), rng.choice(len(pi), o.pairs, p=mu)
        target = expit(estimate_r(P, pi, y1, o.opponents, rng) - estimate_r(P, pi, y2, o.opponents, rng))
        fitted = fit_eq8(logpi, y1, y2, target, eta)
        return fitted, float(np.abs(softmax(fitted) - softmax(exact_step(P, logpi, eta))).sum())

    return _run(g, step)


def dno_prct(g: Game, o: Sampled, rng) -> Trajectory:
    P, eta = g.P, g.eta

    def step(logpi):
        pi = softmax(logpi)
        mu = sampler(pi, o.explore)
        y1, y2 = rng.choice(len(pi), o.pairs, p=mu), rng.choice(len(pi), o.pairs, p=mu)
        r1, r2 = estimate_r(P, pi, y1, o.opponents, rng), estimate_r(P, pi, y2, o.opponents, rng)
        keep = np.abs(r1 - r2) >= o.margin
        win, lose = np.where(r1 >= r2, y1, y2)[keep], np.where(r1 >= r2, y2, y1)[keep]
        theta = logpi.copy()
        for _ in range(o.steps if keep.any() else 0):
            h = eta * ((theta[win] - theta[lose]) - (logpi[win] - logpi[lose]))
            theta -= o.lr * pair_gradient(len(theta), win, lose, -eta * expit(-h) / len(h))  # of -log sigma(h)
        return theta, float(np.abs(softmax(theta) - softmax(exact_step(P, logpi, eta))).sum())

    return _run(g, step)


def fit_bradley_terry(y1: np.ndarray, y2: np.ndarray, won: np.ndarray, n: int, l2: float = 1e-4) -> np.ndarray:
    """Rewards r with P(y1 > y2) = sigma(r1 - r2), by maximum likelihood (a little L2 fixes the offset)."""
    def loss(r):
        h = r[y1] - r[y2]
        value = -np.mean(won * log_expit(h) + (1 - won) * log_expit(-h)) + l2 * r @ r
        return value, 2 * l2 * r + pair_gradient(n, y1, y2, (expit(h) - won) / len(h))

    return minimize(loss, np.zeros(n), jac=True, method="L-BFGS-B").x


def bt_reward(g: Game, o: Sampled, rng) -> Trajectory:
    n = len(g.pi1)
    y1, y2 = rng.integers(0, n, o.pairs), rng.integers(0, n, o.pairs)
    reward = fit_bradley_terry(y1, y2, (rng.random(o.pairs) < g.P[y1, y2]).astype(float), n)
    return _run(g, lambda logpi: (logpi + reward / g.eta, None))


def sppo(g: Game, o: Sampled, rng) -> Trajectory:
    P, eta = g.P, g.eta

    def step(logpi):
        pi = softmax(logpi)
        ys = rng.choice(len(pi), o.pairs, p=sampler(pi, o.explore))
        target = (estimate_r(P, pi, ys, o.opponents, rng) - 0.5) / eta

        def loss(theta):
            logq = theta - logsumexp(theta)
            resid = logq[ys] - logpi[ys] - target
            g = np.bincount(ys, weights=2 * resid / len(ys), minlength=len(theta))
            return float(np.mean(resid**2)), g - softmax(theta) * g.sum()

        fitted = minimize(loss, logpi.copy(), jac=True, method="L-BFGS-B").x
        return fitted, float(np.abs(softmax(fitted) - softmax(exact_step(P, logpi, eta))).sum())

    return _run(g, step)


METHODS = {"dno_exact": dno_exact, "dno": dno, "dno_prct": dno_prct, "bt_reward": bt_reward, "sppo": sppo}
