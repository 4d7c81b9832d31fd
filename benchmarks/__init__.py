"""Benchmarks of modelrollout in the local lab (`make bench`, `python -m benchmarks.run`)."""
