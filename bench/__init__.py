"""Benchmarks: each measures a figure against a baseline in the same run (see README)."""
