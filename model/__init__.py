"""The detector: build, save, load, decode and batch inference. Knows nothing of jobs, SQL or Celery."""
