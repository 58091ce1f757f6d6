"""Local files and directories: a recursive, lazy walk and bounded reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from aiscan.jobs.errors import FetchError, SourceError
from aiscan.jobs.sources.capped import read_capped
from aiscan.model.errors import ErrorKind
from aiscan.model.formats import IMAGE_EXTENSIONS, sniff_image

_MIN_READ = 64 * 1024


class LocalSource:
    """A directory walked recursively, or a single file."""

    def __init__(self, spec: str) -> None:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SourceError(f"no such file or directory: {spec}")
        self.root = Path(os.path.abspath(path))
        # Stored absolute so a worker started in another directory finds the same files.
        self.spec = str(self.root)
        self.skipped = 0

    def iter_refs(self) -> Iterator[str]:
        """Image paths under the root in a stable order; non-image files are counted in ``skipped``."""
        if self.root.is_file():
            yield str(self.root)
            return
        yield from self._walk(str(self.root))

    def _walk(self, directory: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            # An unreadable sub-directory is not a reason to stop the whole scan.
            self.skipped += 1
            return
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry.path)
            elif entry.is_file() and self._is_image(entry):
                yield entry.path
            elif entry.is_file():
                self.skipped += 1

    @staticmethod
    def _is_image(entry: os.DirEntry[str]) -> bool:
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            return True
        try:
            with open(entry.path, "rb") as fh:
                return sniff_image(fh.read(32))
        except OSError:
            return False


def read_local(path: str, max_bytes: int) -> bytes:
    """The bytes of one local image, or a FetchError naming why not."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise FetchError(ErrorKind.TOO_LARGE, f"file is {size} bytes, the limit is {max_bytes}")
            # one read takes a regular file whole; the cap holds for one that grows, or a device
            chunks = iter(partial(fh.read, max(size + 1, _MIN_READ)), b"")
            return read_capped(chunks, max_bytes, "the file")
    except FileNotFoundError:
        raise FetchError(ErrorKind.MISSING, "file no longer exists") from None
    except IsADirectoryError:
        raise FetchError(ErrorKind.NOT_AN_IMAGE, "is a directory") from None
    except PermissionError:
        raise FetchError(ErrorKind.UNREADABLE, "permission denied") from None
    except OSError as exc:
        raise FetchError(ErrorKind.IO_ERROR, f"read failed: {exc.strerror or exc}") from None
