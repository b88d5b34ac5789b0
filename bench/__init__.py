"""The benchmark harness behind `make bench`: pg-feed, a LISTEN limit and redis-mq.

Run it with `python -m bench` (see docs/BENCHMARKS.md for what it measures).
"""
