"""The losses against numbers computed by hand, and their interface (dno.losses.Loss)."""

from __future__ import annotations

import math

import pytest
import torch

from dno.losses import (
    DNOLoss,
    DNOPrctLoss,
    IPOLoss,
    PairLogps,
    SFTLoss,
    SPPOLoss,
    dno_loss,
    dno_prct_loss,
    ipo_loss,
    sppo_loss,
)

T = torch.tensor


def inputs(policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_win=0.0, rejected_win=0.0, n_tokens=1.0):
    t = lambda x: torch.as_tensor(x, dtype=torch.float32).reshape(-1)  # noqa: E731
    return PairLogps(policy_chosen_logps=t(policy_chosen), policy_rejected_logps=t(policy_rejected),
                     ref_chosen_logps=t(ref_chosen), ref_rejected_logps=t(ref_rejected),
                     chosen_win_prob=t(chosen_win), rejected_win_prob=t(rejected_win), chosen_n_tokens=t(n_tokens))


def test_eq13_policy_equal_to_reference_gives_log_2():
    x = T([-5.0, -12.0])
    assert torch.allclose(DNOPrctLoss(0.1)(inputs(x, x + 1, x, x + 1)), torch.full((2,), math.log(2)))
    assert torch.allclose(dno_prct_loss(T([0.0, 0.0]), beta=0.1), torch.full((2,), math.log(2)))


def test_eq13_value_by_hand():
    # h = (-1 - -3) - (-4 - -2) = 2 - (-2) = 4; beta * h = 0.4; -log sigma(0.4) = log(1 + e^-0.4)
    assert inputs(-1, -4, -3, -2).h().item() == 4.0
    loss = dno_prct_loss(T([4.0]), beta=0.1)
    assert math.isclose(loss.item(), math.log1p(math.exp(-0.4)), rel_tol=1e-6)
    assert math.isclose(DNOPrctLoss(0.1)(inputs(-1, -4, -3, -2)).item(), math.log1p(math.exp(-0.4)), rel_tol=1e-6)


def test_eq13_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = T([-3.0], requires_grad=True), T([-3.0], requires_grad=True)
    DNOPrctLoss(0.5)(PairLogps(chosen, rejected, T([-3.0]), T([-3.0]), T([0.0]), T([0.0]), T([1.0]))).sum().backward()
    assert chosen.grad.item() == -0.25 and rejected.grad.item() == 0.25  # -beta * sigma(0) = -0.25


def test_dno_eq8_by_hand():
    zero = T([0.0])
    # h = 0: log 2 whatever the target
    assert math.isclose(dno_loss(zero, T([1.0]), T([0.0]), beta=0.1).item(), math.log(2), rel_tol=1e-6)
    # r1 - r2 = 1: p = sigma(1) = 0.7311; beta * h = 0.1 * 2 = 0.2
    p, z = 1 / (1 + math.exp(-1)), 0.2
    expected = -(p * math.log(1 / (1 + math.exp(-z))) + (1 - p) * math.log(1 / (1 + math.exp(z))))
    got = dno_loss(T([2.0]), T([1.0]), T([0.0]), beta=0.1)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    assert math.isclose(DNOLoss(0.1)(inputs(2, 0, 0, 0, 1.0, 0.0)).item(), expected, rel_tol=1e-6)
    # reward_scale sharpens the target: p = sigma(10 * 1) ~ 1, so the loss nears Eq. 13's
    sharp = dno_loss(T([2.0]), T([1.0]), T([0.0]), beta=0.1, reward_scale=10.0)
    assert math.isclose(sharp.item(), dno_prct_loss(T([2.0]), beta=0.1).item(), rel_tol=1e-3)


def test_dno_gradient_stops_at_the_soft_target():
    # the minimum of Eq. 8 over h is where sigma(beta * h) = p, i.e. beta * h = r1 - r2
    h = T([0.0], requires_grad=True)
    for _ in range(2000):
        loss = dno_loss(h, T([0.75]), T([0.25]), beta=0.5)
        (g,) = torch.autograd.grad(loss.sum(), h)
        h = (h - 2.0 * g).detach().requires_grad_()
    assert h.item() == pytest.approx(0.5 / 0.5, abs=1e-3)  # beta * h = 0.5


def test_ipo_by_hand():
    # h = 4, beta = 0.1: (4 - 5)^2 = 1; h = 5 is the minimum
    assert ipo_loss(T([4.0]), beta=0.1).item() == pytest.approx(1.0)
    assert ipo_loss(T([5.0]), beta=0.1).item() == pytest.approx(0.0)
    assert IPOLoss(0.1)(inputs(-1, -4, -3, -2)).item() == pytest.approx(1.0)


def test_sppo_by_hand():
    # log-ratios 1 and -1; targets (0.9 - 0.5) / 0.5 = 0.8 and (0.2 - 0.5) / 0.5 = -0.6
    got = sppo_loss(T([1.0]), T([-1.0]), T([0.9]), T([0.2]), beta=0.5)
    assert got.item() == pytest.approx((1 - 0.8) ** 2 + (-1 + 0.6) ** 2)
    assert SPPOLoss(0.5)(inputs(1, -1, 0, 0, 0.9, 0.2)).item() == pytest.approx((1 - 0.8) ** 2 + (-1 + 0.6) ** 2)


def test_sft_is_the_mean_token_nll_of_the_chosen_response():
    assert SFTLoss()(inputs(-6.0, 0, 0, 0, n_tokens=3.0)).item() == pytest.approx(2.0)


def test_loss_objects_state_their_needs():
    assert all(x.needs_reference and x.needs_rejected for x in (DNOPrctLoss(0.1), IPOLoss(0.1), DNOLoss(0.1),
                                                                SPPOLoss(0.1)))
    assert not SFTLoss().needs_reference and not SFTLoss().needs_rejected
    zero = inputs([0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3, [0.0] * 3, [1.0] * 3)
    assert torch.allclose(DNOPrctLoss(0.1)(zero), torch.full((3,), math.log(2)))
    assert torch.allclose(DNOLoss(0.1)(zero), torch.full((3,), math.log(2)))


def test_a_misspelled_input_fails_instead_of_vanishing():
    with pytest.raises(TypeError, match="chosen_win_rate"):
        PairLogps(policy_chosen_logps=T([0.0]), policy_rejected_logps=T([0.0]), ref_chosen_logps=T([0.0]),
                  ref_rejected_logps=T([0.0]), chosen_win_rate=T([1.0]), rejected_win_prob=T([0.0]),
                  chosen_n_tokens=T([1.0]))
