"""Benchmarks: commands that print and write figures (never part of the timed test suite)."""
