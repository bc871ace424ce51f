"""How often another oracle agrees with a run's oracle, on the run's own judged samples.

    .venv/bin/python experiments/judge_agreement.py RUN_DIR oracle=local_judge [iteration=1] [prompts=32]

Re-judges `RUN_DIR/iter_<iteration>/judgements.jsonl` (the K samples, plus the teacher answer when
there is one) with the oracle the overrides compose, and reports, over the pairs the run's oracle
decided (P != 0.5), the share on which the other oracle's P(a > b) falls on the same side of 0.5,
with the time it took. Nothing in the run directory is changed.
"""

from __future__ import annotations

import json
import sys
import time

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dno.oracles.base import all_pairs
from dno.runtime.config import CONF_DIR
from dno.runtime.layout import RunDir
from dno.stages.records import Judged, read_rows


def main(argv: list[str]) -> dict:
    run_dir, overrides = argv[0], argv[1:]
    ours_keys = ("iteration", "prompts")
    options = {k: int(v) for k, v in (o.split("=", 1) for o in overrides if o.split("=")[0] in ours_keys)}
    overrides = [o for o in overrides if o.split("=")[0] not in ours_keys]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    oracle = instantiate(cfg.oracle)
    oracle.check()
    judged = RunDir(run_dir).iteration(options.get("iteration", 1)).judgements
    rows = [r for r in read_rows(judged, Judged) if r.judgement.status == "ok"][: options.get("prompts", 32)]
    start = time.perf_counter()
    theirs = oracle.judge_many([(r.prompt, r.candidates) for r in rows])
    seconds = time.perf_counter() - start
    agree = decided = abstained = 0
    for r, j in zip(rows, theirs, strict=True):
        ours = r.judgement
        for a, b in all_pairs(len(r.candidates)):
            p, q = ours.preference(a, b), j.preference(a, b)
            if p is None or p == 0.5:
                continue
            decided += 1
            if q is None or q == 0.5:
                abstained += 1
            else:
                agree += (p > 0.5) == (q > 0.5)
    report = {"oracle": cfg.oracle._target_, "prompts": len(rows), "decided_pairs": decided,
              "agreement": agree / max(decided - abstained, 1), "abstained": abstained,
              "not_ok": sum(j.status != "ok" for j in theirs), "seconds": round(seconds, 1),
              "seconds_per_prompt": round(seconds / max(len(rows), 1), 2)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
