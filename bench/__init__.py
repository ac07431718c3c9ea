"""Benchmarks: `make bench` (`python -m bench.run`). Results go to docs/benchmarks.md."""
