"""Benchmarks of the generated project's DaskRunner (``run_benchmarks.py``)."""
