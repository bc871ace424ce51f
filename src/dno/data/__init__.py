"""Prompt sources. Each returns records {"id", "instruction", "teacher", ...}; `teacher` (the
teacher's answer to the prompt) may be None."""
