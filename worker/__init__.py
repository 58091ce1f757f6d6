"""What `celery -A worker worker` runs: the Celery app with aiscan's tasks registered."""

from worker.tasks import app

__all__ = ["app"]
