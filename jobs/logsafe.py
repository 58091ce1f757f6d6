"""Log records at INFO and above never show a URL's query string or credentials.

httpx logs every request's full URL at INFO ("HTTP Request: GET https://...?X-Amz-Signature=..."),
and workers log at INFO: the record factory below redacts each record's message as it is made,
whichever logger or handler it goes to.
"""

from __future__ import annotations

import logging
from typing import Any

from aiscan.jobs.sources.urltext import redact_text

_installed = False


def _redacting_factory(make: Any) -> Any:
    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = make(*args, **kwargs)
        if record.levelno >= logging.INFO:
            message = record.getMessage()
            safe = redact_text(message)
            if safe != message:
                record.msg, record.args = safe, None
        return record

    return factory


def install() -> None:
    """Redact every log record made in this process from now on; calling it again changes nothing."""
    global _installed
    if not _installed:
        logging.setLogRecordFactory(_redacting_factory(logging.getLogRecordFactory()))
        _installed = True
