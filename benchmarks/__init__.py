"""Benchmarks of the tracker (see docs/benchmarks.md); run ``python -m benchmarks.bench_ledger --help``."""
