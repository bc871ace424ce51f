"""Losses of DNO and its baselines over per-sequence summed log-probabilities (arXiv 2404.03715).

The pure functions take tensors of shape (B,): policy and reference log-probs of responses 1 and
2, and where needed the oracle's expected win-rates r_t(x, y) of the two; each returns the
per-example loss, shape (B,). With h = (policy_logps_1 - ref_logps_1) - (policy_logps_2 - ref_logps_2).
The reference of iteration t is the previous iterate pi_t, never the SFT model.

The loss objects below are what the configs instantiate; the loop asks them what they need
(`needs_soft_targets`, `needs_reference`) instead of branching on their names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _h(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2) -> torch.Tensor:
    return (policy_logps_1 - ref_logps_1) - (policy_logps_2 - ref_logps_2)


def dno_loss(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2, *, win_rate_1, win_rate_2,
             beta: float, reward_scale: float = 1.0) -> torch.Tensor:
    """Eq. 8 of arXiv 2404.03715 (Algorithm 1): binary cross-entropy between the policy's implicit
    preference sigma(beta * h) and the soft target p = sigma(reward_scale * (win_rate_1 - win_rate_2)).

    Shape: (B,) -> (B,). h = 0 gives log 2 whatever the target.
    """
    p = torch.sigmoid(reward_scale * (win_rate_1 - win_rate_2))
    z = beta * _h(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2)
    return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))


def dpo_loss(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2, *, beta: float) -> torch.Tensor:
    """Eq. 13 of arXiv 2404.03715 (DNO-Prct): -log sigma(beta * h), response 1 the positive.

    beta is the paper's eta. Shape: (B,) -> (B,). Policy equal to reference gives log 2.
    """
    return -F.logsigmoid(beta * _h(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2))


def ipo_loss(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2, *, beta: float) -> torch.Tensor:
    """IPO (Azar et al., arXiv 2310.12036, Eq. 17): (h - 1 / (2 * beta))^2. Shape: (B,) -> (B,)."""
    return (_h(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2) - 1 / (2 * beta)) ** 2


def sppo_loss(policy_logps_1, policy_logps_2, ref_logps_1, ref_logps_2, *, win_rate_1, win_rate_2,
              beta: float) -> torch.Tensor:
    """SPPO (Wu et al., arXiv 2405.00675) with eta = 1 / beta: each response's log-ratio regressed
    onto its centred win-rate, (log pi/pi_t - (r - 1/2) / beta)^2, summed over both. Shape: (B,) -> (B,)."""
    return ((policy_logps_1 - ref_logps_1 - (win_rate_1 - 0.5) / beta) ** 2
            + (policy_logps_2 - ref_logps_2 - (win_rate_2 - 0.5) / beta) ** 2)


@dataclass(frozen=True)
class DNOPrctLoss:
    """Eq. 13 on (chosen, rejected) pairs chosen by the paper's large-margin rules."""

    beta: float
    needs_reference = True
    needs_soft_targets = False
    needs_rejected = True

    def __call__(self, policy_1, policy_2, ref_1, ref_2, **_) -> torch.Tensor:
        return dpo_loss(policy_1, policy_2, ref_1, ref_2, beta=self.beta)


@dataclass(frozen=True)
class IPOLoss(DNOPrctLoss):
    """IPO on the same large-margin pairs as DNO-Prct."""

    def __call__(self, policy_1, policy_2, ref_1, ref_2, **_) -> torch.Tensor:
        return ipo_loss(policy_1, policy_2, ref_1, ref_2, beta=self.beta)


@dataclass(frozen=True)
class DNOLoss:
    """Eq. 8 on pairs drawn from all samples, with the oracle's win-rates as soft targets."""

    beta: float
    reward_scale: float = 1.0
    needs_reference = True
    needs_soft_targets = True
    needs_rejected = True

    def __call__(self, policy_1, policy_2, ref_1, ref_2, *, win_rate_1, win_rate_2, **_) -> torch.Tensor:
        return dno_loss(policy_1, policy_2, ref_1, ref_2, win_rate_1=win_rate_1, win_rate_2=win_rate_2,
                        beta=self.beta, reward_scale=self.reward_scale)


@dataclass(frozen=True)
class SPPOLoss:
    """SPPO on pairs drawn from all samples, with the oracle's win-rates."""

    beta: float
    needs_reference = True
    needs_soft_targets = True
    needs_rejected = True

    def __call__(self, policy_1, policy_2, ref_1, ref_2, *, win_rate_1, win_rate_2, **_) -> torch.Tensor:
        return sppo_loss(policy_1, policy_2, ref_1, ref_2, win_rate_1=win_rate_1, win_rate_2=win_rate_2,
                         beta=self.beta)


def sft_loss(policy_logps: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
    """Supervised fine-tuning: mean negative log-likelihood per response token (prompt masked).

    The "SFT on positives" baseline of Table 1. Shape: (B,) -> (B,).
    """
    return -policy_logps / n_tokens


@dataclass(frozen=True)
class SFTLoss:
    """SFT on the positive (chosen) responses only; no reference, no negatives."""

    needs_reference = False
    needs_soft_targets = False
    needs_rejected = False

    def __call__(self, policy_1, policy_2, ref_1, ref_2, *, n_tokens_1, **_) -> torch.Tensor:
        return sft_loss(policy_1, n_tokens_1)
