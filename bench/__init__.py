"""Benchmark of the service against a minimal reference app (``python bench/run.py``)."""
