"""A judge cache that cannot serve the run is found before any compute, named, and never touched:
not SQLite, truncated, read-only, a directory, locked by another writer past the timeout."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest

from dno.oracles.cache import JudgeCache
from dno.run import Run
from dno.runtime.config import ConfigError
from helpers import make_cfg


def filled(path) -> JudgeCache:
    cache = JudgeCache(path)
    for i in range(200):
        cache.put(f"k{i}", {"text": "x" * 500, "i": i})
    cache._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return cache


def test_a_good_cache_and_a_new_one_pass(tmp_path):
    filled(tmp_path / "good.sqlite").check()
    JudgeCache(tmp_path / "new" / "cache.sqlite").check()
    assert not (tmp_path / "new" / "cache.sqlite").exists()  # checking creates nothing


@pytest.mark.parametrize("damage", ["text", "truncated", "foreign"])
def test_a_damaged_cache_is_named_and_left_as_it_is(tmp_path, damage):
    path = tmp_path / "cache.sqlite"
    if damage == "text":
        path.write_text("this is not a database\n" * 100)
    elif damage == "truncated":  # a copy cut short: the header says 200 rows of pages that are not there
        filled(tmp_path / "full.sqlite")
        data = (tmp_path / "full.sqlite").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    else:  # a real SQLite file, but someone else's
        sqlite3.connect(path).execute("CREATE TABLE users (name TEXT)")
    before = path.read_bytes()
    with pytest.raises(ValueError, match=f"oracle.cache_path={path}"):
        JudgeCache(path).check()
    assert path.read_bytes() == before


def test_a_read_only_cache_or_directory_is_refused(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind would be needed
        pytest.skip("permissions do not bind root")
    path = tmp_path / "cache.sqlite"
    filled(path)
    path.chmod(0o444)
    with pytest.raises(ValueError, match="read-only"):
        JudgeCache(path).check()


def test_a_directory_is_not_a_cache(tmp_path):
    with pytest.raises(ValueError, match="is a directory"):
        JudgeCache(tmp_path).check()


def test_a_writer_holding_the_lock_past_the_timeout_is_found(tmp_path):
    path = tmp_path / "cache.sqlite"
    filled(path)
    hold = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(30)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="locked by another writer for more than 0 s"):
            JudgeCache(path, timeout_s=0.3).check()
    finally:
        holder.kill()
        holder.wait()
    JudgeCache(path, timeout_s=0.3).check()  # released: fine again


def test_a_run_with_a_damaged_cache_stops_before_compute(tmp_path):
    path = tmp_path / "judge_cache.sqlite"
    path.write_bytes(b"\x00" * 4096)
    cfg = make_cfg("model=tiny_random", "schedule=smoke", "logger=none", "oracle=openai_listwise", "oracle.base_url=http://127.0.0.1:9/v1",
                   "oracle.api_key_env=null", f"oracle.cache_path={path}")
    with pytest.raises(ConfigError, match=f"oracle.cache_path={path}: not a usable SQLite judge cache"):
        Run.build(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "init").exists() and path.read_bytes() == b"\x00" * 4096
