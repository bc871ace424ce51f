"""Losses of DNO and its baselines over per-sequence summed log-probabilities (arXiv 2404.03715).

The pure functions take tensors of shape (B,), one entry per pair: h = (log pi(y+) - log pi_t(y+)) -
(log pi(y-) - log pi_t(y-)), the policy's log-ratio margin over its reference (Eq. 13 writes it
inside the sigmoid), and where needed r_t(x, y) of each answer (`*_win_prob`, the oracle's expected
probability that the answer beats a sample of pi_t, in [0, 1]); each returns the per-pair loss, shape
(B,). The reference of iteration t is the previous iterate pi_t, never the SFT model; beta is the
paper's eta.

The loss objects below are what a loss variant (conf/loss/*.yaml, `objective:`) instantiates.
They follow the `Loss` protocol: one `PairLogps` in, a (B,) tensor out, and the loop asks them what
they need (`needs_reference`, `needs_rejected`) instead of branching on their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairLogps:
    """What a loss sees of a micro-batch of B pairs; every field has shape (B,).

    The paper's symbols: policy_*_logps = log pi(y | x) of the policy being trained, ref_*_logps =
    log pi_t(y | x) of its reference (the previous iterate), *_win_prob = r_t(x, y), each summed over the
    answer's tokens; chosen is y+ (or y1), rejected y- (or y2)."""

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor  # zeros for a loss that does not need the rejected response
    ref_chosen_logps: torch.Tensor  # zeros for a loss without a reference
    ref_rejected_logps: torch.Tensor
    chosen_win_prob: torch.Tensor  # r_t(x, y+)
    rejected_win_prob: torch.Tensor  # r_t(x, y-)
    chosen_n_tokens: torch.Tensor  # response tokens of the chosen response

    def h(self) -> torch.Tensor:
        """h = (log pi(y+) - log pi_t(y+)) - (log pi(y-) - log pi_t(y-)), shape (B,)."""
        return _h(self.policy_chosen_logps, self.policy_rejected_logps, self.ref_chosen_logps, self.ref_rejected_logps)


class Loss(Protocol):
    needs_reference: bool  # reference log-probs of pi_t are computed for the pairs
    needs_rejected: bool  # the rejected response is forwarded through the policy

    def __call__(self, batch: PairLogps) -> torch.Tensor: ...


def _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) -> torch.Tensor:
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dno_loss(h: torch.Tensor, chosen_win_prob: torch.Tensor, rejected_win_prob: torch.Tensor, *, beta: float,
             reward_scale: float = 1.0) -> torch.Tensor:
    """Eq. 8 of arXiv 2404.03715 (Algorithm 1): binary cross-entropy between the policy's implicit
    preference sigma(beta * h) and the soft target p = sigma(reward_scale * (r_t(y1) - r_t(y2))).

    Args:
        h: (B,) log-ratio margins; chosen_win_prob, rejected_win_prob: (B,) r_t of y1 and y2.
        beta: the paper's eta; reward_scale: the scale of the r_t difference in the target.
    Returns: (B,). h = 0 gives log 2 whatever the target.
    """
    p = torch.sigmoid(reward_scale * (chosen_win_prob - rejected_win_prob))
    z = beta * h
    return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))


def dno_prct_loss(h: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Eq. 13 of arXiv 2404.03715 (DNO-Prct, Algorithm 2 step 5): -log sigma(beta * h), the DPO loss
    with reference pi_t. Shape: (B,) -> (B,). Policy equal to reference (h = 0) gives log 2.
    """
    return -F.logsigmoid(beta * h)


def ipo_loss(h: torch.Tensor, *, beta: float) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): (h - 1 / (2 * beta))^2. Shape: (B,) -> (B,)."""
    return (h - 1 / (2 * beta)) ** 2


def sppo_loss(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, chosen_win_prob: torch.Tensor,
              rejected_win_prob: torch.Tensor, *, beta: float) -> torch.Tensor:
    """SPPO (Wu et al., arXiv 2405.00675) with eta = 1 / beta: each answer's log-ratio log pi(y) - log pi_t(y)
    regressed onto its centred r_t, (log-ratio - (r_t - 1/2) / beta)^2, summed over both answers.

    Args: four (B,) tensors, the log-ratios and r_t of y1 and y2. Returns: (B,).
    """
    return ((chosen_logratio - (chosen_win_prob - 0.5) / beta) ** 2
            + (rejected_logratio - (rejected_win_prob - 0.5) / beta) ** 2)


def sft_loss(policy_chosen_logps: torch.Tensor, chosen_n_tokens: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: mean negative log-likelihood per response token (prompt masked).

    The "SFT on positives" baseline of Table 1. Args: (B,) summed log-probs and token counts. Returns: (B,).
    """
    return -policy_chosen_logps / chosen_n_tokens


@dataclass(frozen=True)
class DNOPrctLoss:
    """Eq. 13 (DNO-Prct): -log sigma(beta * h). `beta`: the paper's eta (`loss.beta`, 0.1)."""

    beta: float
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return dno_prct_loss(b.h(), beta=self.beta)


@dataclass(frozen=True)
class IPOLoss(DNOPrctLoss):
    """IPO on the same pairs as DNO-Prct: (h - 1 / (2 beta))^2. `beta`: IPO's tau, read from `loss.beta`."""

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return ipo_loss(b.h(), beta=self.beta)


@dataclass(frozen=True)
class DNOLoss:
    """Eq. 8 (Algorithm 1), with r_t of both responses as the soft target.

    `beta`: the paper's eta; `reward_scale`: the target is sigma(reward_scale * (r_t(y1) - r_t(y2))), 1 in
    the paper."""

    beta: float
    reward_scale: float = 1.0
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return dno_loss(b.h(), b.chosen_win_prob, b.rejected_win_prob, beta=self.beta, reward_scale=self.reward_scale)


@dataclass(frozen=True)
class SPPOLoss:
    """SPPO with r_t of both responses. `beta`: 1 / SPPO's eta."""

    beta: float
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return sppo_loss(b.policy_chosen_logps - b.ref_chosen_logps, b.policy_rejected_logps - b.ref_rejected_logps,
                         b.chosen_win_prob, b.rejected_win_prob, beta=self.beta)


@dataclass(frozen=True)
class SFTLoss:
    """SFT on the positive (chosen) responses only; no reference, no negatives."""

    needs_reference = False
    needs_rejected = False

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return sft_loss(b.policy_chosen_logps, b.chosen_n_tokens)
