"""Benchmarks: each `bench_*.py` module runs our path and a baseline in the same run."""
