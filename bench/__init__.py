"""Benchmarks (not tests): `python -m bench [name ...]`; figures go to bench/REPORT.md."""
