"""`make demo` ends with its own wall time and the CPU it ran on."""

from __future__ import annotations

import re
import subprocess

from helpers import REPO

LINE = re.compile(r"make demo: wall time (\d+ min \d+ s) after the install, on (.+) \((\d+) cores\)")


def test_make_demo_prints_its_wall_time_and_cpu_and_keeps_dno_runs_exit_status(tmp_path):
    """The Makefile's own recipe, with a stand-in dno-run (so that nothing is installed or trained)."""
    from dno.runtime.provenance import cpu_name

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {REPO / ".venv" / "bin" / "python"} "$@"\n')
    for status in (0, 3):
        (bin_dir / "dno-run").write_text(f'#!/bin/sh\necho "dno-run $@"\nexit {status}\n')
        for f in bin_dir.iterdir():
            f.chmod(0o755)
        done = subprocess.run(["make", "-s", "-o", "install", "demo", f"BIN={bin_dir}"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        lines = done.stdout.splitlines()
        assert lines[0] == "dno-run hydra.run.dir=outputs/demo", done.stderr
        wall, cpu, cores = LINE.fullmatch(lines[-1]).groups()
        assert wall == "0 min 0 s" and cpu == cpu_name() and int(cores) >= 1
        assert (done.returncode == 0) == (status == 0)

