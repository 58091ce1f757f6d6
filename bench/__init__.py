"""Throughput and memory benchmark of aiscan (`python -m bench.run`); not a test."""
