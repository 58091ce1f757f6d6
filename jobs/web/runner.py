"""The embedded job runner of `aiscan serve` without a broker: one background thread runs submitted
jobs one at a time, with the same task bodies as `aiscan scan` (jobs.inprocess)."""

from __future__ import annotations

import logging
import queue
import threading

from aiscan.jobs.inprocess import InProcessQueue, run_queue
from aiscan.jobs.scoring import trust_anchors
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import JobStatus
from aiscan.jobs.store.operations import mark_job
from aiscan.jobs.submit import create_job
from aiscan.jobs.tasks import PLAN_JOB

log = logging.getLogger(__name__)


class EmbeddedRunner:
    """Jobs submitted here wait in a FIFO; a daemon thread runs each to its end before the next."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="aiscan-jobs", daemon=True)
        self._thread.start()

    def submit(self, sources: list[str], model_ref: str | None) -> int:
        """Create a pending job (sources and model checked now) and queue it; returns its id."""
        trust_anchors(self.settings)  # a bad anchors file refuses the job before it exists
        job_id = create_job(
            open_database(self.settings.database_url),
            self.settings,
            sources,
            model_ref=model_ref,
            chunk_size=self.settings.chunk_size,
            options={"batch_size": self.settings.batch_size},
        )
        self._jobs.put(job_id)
        return job_id

    def stop(self) -> None:
        """Let the running job finish, then end the thread (jobs still waiting stay pending)."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job_id := self._jobs.get()) is not None:
            tasks = InProcessQueue()
            tasks.send(PLAN_JOB, job_id)
            try:
                run_queue(
                    self.settings, tasks, job_id, batch_size=self.settings.batch_size, show_progress=False
                )
            except Exception as exc:  # one job's failure must not stop the jobs queued after it
                log.exception("job %s failed in the embedded runner", job_id)
                reason = " ".join(str(exc).split()) or type(exc).__name__
                mark_job(open_database(self.settings.database_url), job_id, JobStatus.FAILED, error=reason)
