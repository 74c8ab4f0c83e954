"""Benchmarks: each measures against a reference run in the same script."""
