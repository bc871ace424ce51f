"""DNO's theory checked exactly on small tabular games (independent of the LLM code)."""
