"""A DNO variant: what a method is (conf/loss/*.yaml), apart from what a run costs (conf/schedule/).

    dno-run loss=spin                       # Table 1's SPIN row: a variant is one config choice
    dno-run loss=dno_prct loss.beta=0.05    # a variant's own knobs live under `loss.`

A variant file names its objective (Eq. 8, Eq. 13, IPO, SPPO, SFT: `dno.losses`), its pair rule
(conf/pair_rule/: `dno.pairs`), the replay shares of earlier iterations' pairs, and whether it
trains once from pi_1 on all iterations' pairs (DNO-Lookahead). Whether it needs the teacher's
answer for every prompt (SPIN, DNO-Restrictive) is its pair rule's to say. The loop asks this
object; it never branches on names.
"""

from __future__ import annotations

from dataclasses import dataclass

from dno.losses import Loss
from dno.pairs import PairRule


@dataclass(frozen=True)
class Variant:
    """A DNO variant (conf/loss/*.yaml; the keys of `loss.`).

    Attributes:
        objective: the loss of the update, Algorithm 2's step 5 (Eq. 13 for DNO-Prct, Eq. 8 for DNO; `dno.losses`).
        pairs: which (y+, y-) pairs a prompt's judged candidates give, step 4 (`dno.pairs`, conf/pair_rule/).
        replay: the share of iteration t-1's, t-2's, ... own new pairs replayed into iteration t (the paper:
            30% and 15%).
        lookahead: DNO-Lookahead (Table 1): after the iterations, train pi_1 once on all their new pairs.
        beta: the paper's eta, the strength of the KL term to pi_t; the objective's `beta` reads it. None for
            an objective without a reference (SFT).
    """

    objective: Loss
    pairs: PairRule
    replay: tuple[float, ...] = ()
    lookahead: bool = False
    beta: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "replay", tuple(self.replay))
        for i, share in enumerate(self.replay):
            if not (isinstance(share, int | float) and not isinstance(share, bool) and 0 <= share <= 1):
                raise ValueError(f"loss.replay[{i}] must be a fraction in [0, 1], got {share!r}")
        if self.beta is not None and not (isinstance(self.beta, int | float) and 0 < self.beta <= 1e4):
            raise ValueError(f"loss.beta must be a number in (0, 10000], got {self.beta!r}")

    @property
    def needs_teacher(self) -> bool:
        """Every prompt needs the teacher's answer (from the data or `teacher=`): the rule says so."""
        return self.pairs.needs_teacher
