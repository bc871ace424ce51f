"""Losses of DNO over per-sequence summed log-probabilities (arXiv 2404.03715).

Every function takes tensors of shape (B,) and returns the per-example loss, shape (B,). The
reference of iteration t is the previous iterate pi_t, never the SFT model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def dpo_loss(
    policy_logps_1: torch.Tensor,
    policy_logps_2: torch.Tensor,
    ref_logps_1: torch.Tensor,
    ref_logps_2: torch.Tensor,
    *,
    beta: float,
) -> torch.Tensor:
    """Eq. 13 of arXiv 2404.03715 (DNO-Prct): -log sigma(beta * h), response 1 the positive.

    h = (policy_logps_1 - ref_logps_1) - (policy_logps_2 - ref_logps_2); beta is the paper's eta.
    Shape: (B,) -> (B,). Policy equal to reference gives log 2.
    """
    h = (policy_logps_1 - ref_logps_1) - (policy_logps_2 - ref_logps_2)
    return -F.logsigmoid(beta * h)


@dataclass(frozen=True)
class DNOPrctLoss:
    """Eq. 13 with hard (chosen, rejected) pairs. The loop asks the loss what it needs."""

    beta: float
    needs_reference: bool = True
    needs_soft_targets: bool = False

    def __call__(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, **_) -> torch.Tensor:
        return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=self.beta)
