"""Preference oracles: the judges of DNO. They know nothing of the policy being trained."""
