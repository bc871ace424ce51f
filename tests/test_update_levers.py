"""experiments/update_levers.py in its documented tiny form: every lever row, the layouts' token counts, the
same loss in both layouts, and the fused sampler's samples equal to the unfused one's."""

from __future__ import annotations

import json
import shlex

import pytest

from helpers import REPO, documented_commands, run

pytestmark = [pytest.mark.slow, pytest.mark.experiment]


def test_the_update_levers_script_measures_every_lever(tmp_path):
    command = next(line for line in documented_commands()
                   if "experiments/update_levers.py" in line and "model=tiny_random" in line)
    out = tmp_path / "levers.md"
    words = [w for w in shlex.split(command.split("#")[0]) if not w.startswith("out=")] + [f"out={out}"]
    assert words[:2] == [".venv/bin/python", "experiments/update_levers.py"]
    run([str(REPO / words[0]), *words[1:]], timeout=900)
    r = json.loads(out.with_suffix(".json").read_text())
    for part in ("update", "reference"):
        rows = r[part]
        assert len(rows) == 5 and [row["kept"] for row in rows] == [True] * 4 + [False]
        assert len({row["tokens"] for row in rows}) == 1  # the same pairs, counted the same way
        padded, shared = rows[1], rows[3]
        assert padded["computed"] == padded["tokens"] and shared["computed"] < shared["tokens"]
        assert shared["area"] <= rows[2]["area"]  # packing never widens what a row per pair computes
    whole = r["whole_update"]
    assert [w["layout"] for w in whole[:2]] == ["padded", "shared"]
    assert whole[1]["loss"] == pytest.approx(whole[0]["loss"], abs=1e-5)
    assert [s["kept"] for s in r["sampler"]] == [True, True, False, False]
    assert r["int8_shift"]["fused_same_as_before"] is True
    md = out.read_text()
    assert md.count("| *tried on top:* |") == 3 and "<!-- notes:" in md
    out.write_text(md + "a note\n")  # what follows the notes line survives a re-run
    assert "a note" in out.read_text().split("<!-- notes:", 1)[1]
