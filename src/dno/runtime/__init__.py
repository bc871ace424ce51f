"""What every run relies on, apart from the method: the run directory's layout and its typed records,
atomic files and resumable stages, the lock, signals, commit and provenance, N processes, config checks
and tracking (metrics.jsonl and W&B)."""
