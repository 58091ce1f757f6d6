"""What `celery -A aiscan.worker worker` runs: the Celery app with aiscan's tasks registered."""

from aiscan.worker.tasks import app

__all__ = ["app"]
