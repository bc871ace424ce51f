"""Prompt sources. Each returns records {"id", "instruction", "gold", ...}; `gold` may be None."""
