"""How dno-report groups runs, without starting an app: the overrides a sweep varied (seeds pooled as repeats),
group_by= checked against the runs, on the committed records of the seeded Table 1 sweep (results/table1_seeds/runs,
12 runs: 4 experiments x 3 seeds)."""

from __future__ import annotations

from collections import Counter

import pytest

from dno.reports.wandb_report import grouping, report_runs
from dno.runtime.config import ConfigError
from dno.runtime.tracking import override_values, varied_keys
from helpers import REPO


def test_override_values_are_keys_and_values_without_hydras_own():
    assert override_values(["+foo=1", "++bar=x", "~baz", "hydra.run.dir=out", "hydra/launcher=slurm",
                            "loss.beta=0.05"]) == {"foo": "1", "bar": "x", "baz": "", "loss.beta": "0.05"}
    assert override_values("model=tiny_random seed=1") == {"model": "tiny_random", "seed": "1"}  # the W&B axis


def test_a_sweep_varies_the_keys_whose_values_differ_and_never_the_seed():
    beta_sweep = [{"loss.beta": b, "seed": s, "model": "tiny_random"} for b in ("0.05", "0.1") for s in ("0", "1")]
    assert varied_keys(beta_sweep) == ["loss.beta"]
    assert varied_keys([{"seed": "0"}, {"seed": "1"}]) == []  # seeds alone: repeats of one configuration
    assert varied_keys([{"loss": "ipo"}, {"loss": "ipo", "loss.beta": "0.2"}]) == ["loss.beta"]  # absent is a value


@pytest.fixture(scope="module")
def seeded():
    runs, notes = report_runs(str(REPO / "results" / "table1_seeds" / "runs"))
    assert len(runs) == 12 and notes == []
    return runs


def test_the_seeded_sweep_is_grouped_by_its_experiments_with_three_seeds_each(seeded):
    by = grouping(seeded, None)
    assert by.keys == ("experiment",) and by.varied and by.wandb_keys() == ["experiment"]
    groups = by.groups(seeded)
    assert sorted(groups) == ["experiment=table1_dno", "experiment=table1_dno_restrictive",
                              "experiment=table1_offline_dpo", "experiment=table1_spin"]
    assert all(sorted(r.record.seed for r in rs) == [0, 1, 2] for rs in groups.values())
    one_row = groups["experiment=table1_dno"]  # three seeds of one configuration: nothing varied but the seed
    assert grouping(one_row, None).keys == ("method",) and list(grouping(one_row, None).groups(one_row)) == \
        ["method=DNO"]


def test_group_by_takes_an_axis_or_a_config_key_and_refuses_a_key_of_no_run(seeded):
    methods = grouping(seeded, "method").groups(seeded)
    assert Counter({k: len(v) for k, v in methods.items()}) == {"method=DNO": 3, "method=DNO-Restrictive": 3,
                                                                 "method=SPIN": 3, "method=Offline DPO": 3}
    by = grouping(seeded, ["method", "loss.beta"])
    assert by.wandb_keys() == ["method", "cfg.loss.beta"] and by.label(seeded[0]).startswith("method=DNO, loss.beta=")
    with pytest.raises(ConfigError, match=r"group_by=loss\.bta: loss\.bta is neither a comparison axis"):
        grouping(seeded, "loss.bta")
