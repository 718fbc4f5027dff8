"""Benchmarks: `python -m bench` runs them (bench/registry.py lists them), bench/harness.py
is what they share, bench/report.py renders docs/performance.md from their results."""
