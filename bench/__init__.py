"""aiscan's throughput and memory benchmark (`python -m bench.run`), and the helpers tests share with it."""
