"""Benchmarks of the python-flask stack (``python benchmarks/run.py``); not tests."""
