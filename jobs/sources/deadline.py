"""One wall-clock deadline per fetch, shared by HTTP and S3: every hop, attempt, backoff and body read.

Read timeouts bound each network read, not a server that trickles bytes forever; this deadline does.
"""

from __future__ import annotations

import time

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.model.errors import ErrorKind

# A whole fetch ends within this many AISCAN_URL_TIMEOUTs, plus at most one read timeout for the read
# in progress when the deadline passes.
FETCH_TIME_FACTOR = 10


def fetch_deadline(settings: Settings) -> float:
    """The monotonic time by which a fetch starting now must be done."""
    return time.monotonic() + settings.url_timeout * FETCH_TIME_FACTOR


def time_left(deadline: float, settings: Settings, failure: str) -> float:
    """Seconds left before ``deadline``, or FetchError(timeout) saying ``failure`` when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        total = settings.url_timeout * FETCH_TIME_FACTOR
        raise FetchError(ErrorKind.TIMEOUT, f"{failure} within {total:g} s")
    return left


def longest_fetch(settings: Settings) -> float:
    """The longest one fetch can take: its deadline, and the read in progress when it passes."""
    return settings.url_timeout * (FETCH_TIME_FACTOR + 1)
