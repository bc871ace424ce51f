"""Eq. 13 against numbers computed by hand."""

from __future__ import annotations

import math

import torch

from dno.losses import DNOPrctLoss, dpo_loss


def test_policy_equal_to_reference_gives_log_2():
    x = torch.tensor([-5.0, -12.0])
    assert torch.allclose(dpo_loss(x, x + 1, x, x + 1, beta=0.1), torch.full((2,), math.log(2)))


def test_value_by_hand():
    # h = (-1 - -3) - (-4 - -2) = 2 - (-2) = 4; beta * h = 0.4; -log sigma(0.4) = log(1 + e^-0.4)
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-4.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), beta=0.1)
    assert math.isclose(loss.item(), math.log1p(math.exp(-0.4)), rel_tol=1e-6)


def test_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = torch.tensor([-3.0], requires_grad=True), torch.tensor([-3.0], requires_grad=True)
    dpo_loss(chosen, rejected, torch.tensor([-3.0]), torch.tensor([-3.0]), beta=0.5).sum().backward()
    assert chosen.grad.item() == -0.25 and rejected.grad.item() == 0.25  # -beta * sigma(0) = -0.25


def test_loss_object_states_its_needs():
    loss = DNOPrctLoss(beta=0.1)
    assert loss.needs_reference and not loss.needs_soft_targets
    x = torch.zeros(3)
    assert torch.allclose(loss(x, x, x, x), torch.full((3,), math.log(2)))
