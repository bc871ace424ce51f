"""What is read out of runs: the paper's tables (run records, statistics), dno-bench's report, and the
per-iteration data exported as a Hugging Face dataset."""
