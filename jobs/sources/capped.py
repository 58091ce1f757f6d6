"""Byte-capped reads: local files, S3 bodies and HTTP streams stop at the image size limit."""

from __future__ import annotations

from collections.abc import Iterable

from aiscan.jobs.errors import FetchError
from aiscan.model.errors import ErrorKind


def read_capped(chunks: Iterable[bytes], limit: int, what: str) -> bytes:
    """The chunks joined, or FetchError(too_large) as soon as they pass ``limit`` bytes in all."""
    parts: list[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise FetchError(ErrorKind.TOO_LARGE, f"{what} exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
