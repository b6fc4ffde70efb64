"""Benchmarks: runnable as ``python -m mlcache_lab.bench.<name>``."""
