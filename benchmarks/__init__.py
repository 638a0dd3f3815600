"""Benchmarks: each ``bench_*.py`` module prints a table against a same-run baseline."""
