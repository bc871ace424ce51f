"""The git commit of this code: recorded in provenance.json and in every stage's DONE marker."""

from __future__ import annotations

import functools
import hashlib
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


@functools.cache
def git_state() -> dict:
    """The commit of this code, whether the checkout was dirty, and a sha256 of `git diff HEAD`."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return None

    top = git("rev-parse", "--show-toplevel")
    commit = git("rev-parse", "HEAD") if top and Path(top.strip()).resolve() == REPO else None
    if commit is None:  # installed from a wheel, or no git checkout of dno: the package version says what it can
        return {"commit": None, "dirty": None, "diff_sha256": None}
    status, diff = git("status", "--porcelain", "--untracked-files=no") or "", git("diff", "HEAD") or ""
    return {"commit": commit.strip(), "dirty": bool(status.strip()),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


def commit() -> str | None:
    """The commit, with "+dirty" when the checkout had changes (None outside a git checkout)."""
    state = git_state()
    return state["commit"] and state["commit"] + ("+dirty" if state["dirty"] else "")
