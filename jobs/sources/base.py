"""What every source offers: image refs enumerated lazily, skipped entries counted by reason, and one
ref's bytes as a ``Fetched``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Source(Protocol):
    """A parsed source argument; ``spec`` is what the job stores, ``skip_reasons`` counts the entries
    that are not image refs by why (``skipped`` is their total).

    ``iter_entries`` yields the same refs as ``iter_refs``, each with a fingerprint that changes when the
    object does (None: no cheap way to tell, so a scheduled run always scans it)."""

    spec: str
    skip_reasons: dict[str, int]

    @property
    def skipped(self) -> int: ...

    def iter_refs(self) -> Iterator[str]: ...

    def iter_entries(self) -> Iterator[tuple[str, str | None]]: ...


class SkipCounts:
    """Entries a source passed over, by reason: ``skip("fifo")``; ``skipped`` is the total."""

    def __init__(self) -> None:
        self.skip_reasons: dict[str, int] = {}

    @property
    def skipped(self) -> int:
        return sum(self.skip_reasons.values())

    def skip(self, reason: str) -> None:
        self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1


@dataclass(frozen=True)
class Fetched:
    """The bytes behind one image ref, with the object's ETag where the source has one."""

    data: bytes
    etag: str | None = None
