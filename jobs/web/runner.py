"""The embedded job runner of `aiscan serve` without a broker: one background thread runs submitted
jobs one at a time, with the same task bodies as `aiscan scan` (jobs.inprocess)."""

from __future__ import annotations

import logging
import queue
import threading

from sqlalchemy import select

from aiscan.jobs.inprocess import InProcessQueue, run_queue
from aiscan.jobs.scoring import trust_anchors
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import open_database
from aiscan.jobs.store.models import Job, JobStatus
from aiscan.jobs.store.operations import mark_job, ready_to_finish
from aiscan.jobs.submit import create_job, retry_job
from aiscan.jobs.tasks import FINISH_JOB

# Marks the jobs this runner owns, so a restarted server takes up its own unfinished ones and never a
# job an `aiscan scan` in another process is running.
RUNNER = "web"

log = logging.getLogger(__name__)


class EmbeddedRunner:
    """Jobs submitted here wait in a FIFO; a daemon thread runs each to its end before the next."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: queue.Queue[int | None] = queue.Queue()
        for job_id in self._unfinished():
            self._jobs.put(job_id)
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
            options={"batch_size": self.settings.batch_size, "runner": RUNNER},
        )
        self._jobs.put(job_id)
        return job_id

    def stop(self) -> None:
        """Let the running job finish, then end the thread (jobs still waiting stay pending)."""
        self._jobs.put(None)

    def _unfinished(self) -> list[int]:
        """This runner's jobs that a stopped server left queued or running, oldest first."""
        with open_database(self.settings.database_url).session() as s:
            jobs = s.scalars(select(Job).where(Job.status.not_in(JobStatus.FINISHED)).order_by(Job.id))
            return [job.id for job in jobs if (job.options or {}).get("runner") == RUNNER]

    def _run(self) -> None:
        while (job_id := self._jobs.get()) is not None:
            tasks = InProcessQueue()
            try:
                # A new job is planned; one a restart interrupted resumes its open chunks (tasks are
                # idempotent: a chunk that had committed is not run again).
                db = open_database(self.settings.database_url)
                retry_job(db, tasks.send, job_id, errors=False)
                if ready_to_finish(db, job_id):  # its chunks had all committed: it only owes its end
                    tasks.send(FINISH_JOB, job_id)
                run_queue(
                    self.settings, tasks, job_id, batch_size=self.settings.batch_size, show_progress=False
                )
            except Exception as exc:  # one job's failure must not stop the jobs queued after it
                log.exception("job %s failed in the embedded runner", job_id)
                reason = " ".join(str(exc).split()) or type(exc).__name__
                mark_job(open_database(self.settings.database_url), job_id, JobStatus.FAILED, error=reason)
