"""Reports streamed to HTTP clients: the rows are read in a thread of their own (one database session
from start to end), and handed over through a small bounded queue, so memory stays flat."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from aiscan.jobs.reports import report_pieces
from aiscan.jobs.store.db import Database

# Pieces are joined to about this many characters per chunk sent: fewer, larger writes to the socket.
CHUNK_CHARS = 64 * 1024
_QUEUED_CHUNKS = 4
_END = object()


class _Stopped(Exception):
    """The client went away: the reader stops."""


def report_chunks(db: Database, job_id: int, fmt: str) -> Iterator[str]:
    """The report's text in chunks of about CHUNK_CHARS, produced while it is being sent."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=_QUEUED_CHUNKS)
    stop = threading.Event()

    def put(item: object) -> None:
        while True:
            if stop.is_set():
                raise _Stopped
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            with db.session() as s:
                pending: list[str] = []
                size = 0
                for piece in report_pieces(s, job_id, fmt):
                    pending.append(piece)
                    size += len(piece)
                    if size >= CHUNK_CHARS:
                        put("".join(pending))
                        pending, size = [], 0
                if pending:
                    put("".join(pending))
            put(_END)
        except _Stopped:
            return
        except BaseException as exc:  # handed to the sender, which ends the response with it
            try:
                put(exc)
            except _Stopped:
                return

    threading.Thread(target=produce, name=f"report-{job_id}", daemon=True).start()
    try:
        while (item := chunks.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            yield item
    finally:
        stop.set()
