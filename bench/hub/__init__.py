"""Hub ingest benchmark: the workload, CPU accounting and the drain measurement.

Run with ``.venv/bin/python -m bench.hub_ingest``; see docs/benchmarks.md, "Hub ingest".
"""
