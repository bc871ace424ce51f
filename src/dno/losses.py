"""Losses of DNO and its baselines over per-sequence summed log-probabilities (arXiv 2404.03715).

The pure functions take tensors of shape (B,): the policy's and the reference's log-probs of the
chosen and rejected responses and, where needed, r_t(x, y) of each (`*_win_prob`, the oracle's
expected probability that the response beats a sample of pi_t, in [0, 1]); each returns the
per-example loss, shape (B,). h = (policy_chosen_logps - ref_chosen_logps) -
(policy_rejected_logps - ref_rejected_logps). The reference of iteration t is the previous iterate
pi_t, never the SFT model; beta is the paper's eta.

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
    """What a loss sees of a micro-batch of pairs; every field has shape (B,)."""

    policy_chosen_logps: torch.Tensor
    policy_rejected_logps: torch.Tensor  # zeros for a loss that does not need the rejected response
    ref_chosen_logps: torch.Tensor  # zeros for a loss without a reference
    ref_rejected_logps: torch.Tensor
    chosen_win_prob: torch.Tensor  # r_t(x, y+)
    rejected_win_prob: torch.Tensor  # r_t(x, y-)
    chosen_n_tokens: torch.Tensor  # response tokens of the chosen response

    def h(self) -> torch.Tensor:
        return _h(self.policy_chosen_logps, self.policy_rejected_logps, self.ref_chosen_logps, self.ref_rejected_logps)


class Loss(Protocol):
    needs_reference: bool  # reference log-probs of pi_t are computed for the pairs
    needs_rejected: bool  # the rejected response is forwarded through the policy

    def __call__(self, batch: PairLogps) -> torch.Tensor: ...


def _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) -> torch.Tensor:
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dno_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, chosen_win_prob,
             rejected_win_prob, beta: float, reward_scale: float = 1.0) -> torch.Tensor:
    """Eq. 8 of arXiv 2404.03715 (Algorithm 1): binary cross-entropy between the policy's implicit
    preference sigma(beta * h) and the soft target p = sigma(reward_scale * (r_t(y1) - r_t(y2))).

    Shape: (B,) -> (B,). h = 0 gives log 2 whatever the target.
    """
    p = torch.sigmoid(reward_scale * (chosen_win_prob - rejected_win_prob))
    z = beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))


def dno_prct_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
                  beta: float) -> torch.Tensor:
    """Eq. 13 of arXiv 2404.03715 (DNO-Prct, Algorithm 2 step 5): -log sigma(beta * h), the DPO loss
    with reference pi_t. Shape: (B,) -> (B,). Policy equal to reference gives log 2.
    """
    return -F.logsigmoid(beta * _h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps))


def ipo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *,
             beta: float) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): (h - 1 / (2 * beta))^2. Shape: (B,) -> (B,)."""
    return (_h(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps) - 1 / (2 * beta)) ** 2


def sppo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, *, chosen_win_prob,
              rejected_win_prob, beta: float) -> torch.Tensor:
    """SPPO (Wu et al., arXiv 2405.00675) with eta = 1 / beta: each response's log-ratio regressed
    onto its centred r_t, (log pi/pi_t - (r_t - 1/2) / beta)^2, summed over both. Shape: (B,) -> (B,)."""
    return ((policy_chosen_logps - ref_chosen_logps - (chosen_win_prob - 0.5) / beta) ** 2
            + (policy_rejected_logps - ref_rejected_logps - (rejected_win_prob - 0.5) / beta) ** 2)


def sft_loss(policy_chosen_logps: torch.Tensor, chosen_n_tokens: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: mean negative log-likelihood per response token (prompt masked).

    The "SFT on positives" baseline of Table 1. Shape: (B,) -> (B,).
    """
    return -policy_chosen_logps / chosen_n_tokens


@dataclass(frozen=True)
class DNOPrctLoss:
    """Eq. 13 (DNO-Prct)."""

    beta: float
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return dno_prct_loss(b.policy_chosen_logps, b.policy_rejected_logps, b.ref_chosen_logps,
                             b.ref_rejected_logps, beta=self.beta)


@dataclass(frozen=True)
class IPOLoss(DNOPrctLoss):
    """IPO on the same pairs as DNO-Prct."""

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return ipo_loss(b.policy_chosen_logps, b.policy_rejected_logps, b.ref_chosen_logps, b.ref_rejected_logps,
                        beta=self.beta)


@dataclass(frozen=True)
class DNOLoss:
    """Eq. 8 (Algorithm 1), with r_t of both responses as the soft target."""

    beta: float
    reward_scale: float = 1.0
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return dno_loss(b.policy_chosen_logps, b.policy_rejected_logps, b.ref_chosen_logps, b.ref_rejected_logps,
                        chosen_win_prob=b.chosen_win_prob, rejected_win_prob=b.rejected_win_prob, beta=self.beta,
                        reward_scale=self.reward_scale)


@dataclass(frozen=True)
class SPPOLoss:
    """SPPO with r_t of both responses."""

    beta: float
    needs_reference = True
    needs_rejected = True

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return sppo_loss(b.policy_chosen_logps, b.policy_rejected_logps, b.ref_chosen_logps, b.ref_rejected_logps,
                         chosen_win_prob=b.chosen_win_prob, rejected_win_prob=b.rejected_win_prob, beta=self.beta)


@dataclass(frozen=True)
class SFTLoss:
    """SFT on the positive (chosen) responses only; no reference, no negatives."""

    needs_reference = False
    needs_rejected = False

    def __call__(self, b: PairLogps) -> torch.Tensor:
        return sft_loss(b.policy_chosen_logps, b.chosen_n_tokens)
