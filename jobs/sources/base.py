"""What every source offers: image refs enumerated lazily, and one ref's bytes as a ``Fetched``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


class Source(Protocol):
    """A parsed source argument; ``spec`` is what the job stores, ``skipped`` counts non-image entries."""

    spec: str
    skipped: int

    def iter_refs(self) -> Iterator[str]: ...


@dataclass(frozen=True)
class Fetched:
    """The bytes behind one image ref, with the object's ETag where the source has one."""

    data: bytes
    etag: str | None = None
