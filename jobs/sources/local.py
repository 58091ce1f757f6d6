"""Local files and directories: an iterative walk that stays inside its root, and reads that never block.

Links are followed only to regular files. A link to a file inside the root is skipped, since the walk
reaches that file under its own name; one to a file outside the root is skipped unless
``AISCAN_FOLLOW_LINKS_OUTSIDE_ROOT`` allows it, and then its target's real path is the ref. Links to
directories are never followed, so a walk cannot loop or leave its root through one.
Refs are real paths (no symbolic link anywhere), so a read refuses any path in which a link appeared
since planning.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from functools import partial

from aiscan.jobs.errors import FetchError, SourceError
from aiscan.jobs.sources.base import SkipCounts
from aiscan.jobs.sources.capped import read_capped
from aiscan.model.errors import ErrorKind
from aiscan.model.formats import IMAGE_EXTENSIONS, sniff_image

_MIN_READ = 64 * 1024
# non-blocking: opening a FIFO that replaced a planned file must not wait for a writer
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def file_kind(mode: int) -> str:
    """What a non-directory is, as a skip reason: ``file`` for a regular file."""
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special_file"


class LocalSource(SkipCounts):
    """A directory walked depth-first without recursion, or a single file."""

    def __init__(self, spec: str, *, follow_links_outside_root: bool = False) -> None:
        path = os.path.expanduser(spec)
        if not os.path.exists(path):
            raise SourceError(f"no such file or directory: {spec}")
        super().__init__()
        # The real path, stored so a worker started in another directory finds the same files, and so
        # every ref below it is free of links.
        self.root = os.path.realpath(path)
        self.spec = self.root
        self.follow_links_outside_root = follow_links_outside_root

    def iter_refs(self) -> Iterator[str]:
        """Image paths under the root in a stable order; every other entry is counted in ``skip_reasons``."""
        try:
            mode = os.stat(self.root).st_mode
        except OSError:
            self.skip("unreadable")
            return
        if stat.S_ISDIR(mode):
            yield from self._walk()
        elif stat.S_ISREG(mode):
            yield self.root
        else:
            self.skip(file_kind(mode))

    def iter_entries(self) -> Iterator[tuple[str, str | None]]:
        """The refs of ``iter_refs`` with ``size:BYTES:mtime_ns:NS``: a rewrite changes one or the other."""
        for ref in self.iter_refs():
            try:
                st = os.stat(ref)
            except OSError:
                yield ref, None  # gone or unreadable since the walk: its scan records why
                continue
            yield ref, f"size:{st.st_size}:mtime_ns:{st.st_mtime_ns}"

    def _walk(self) -> Iterator[str]:
        # one iterator of sorted entries per open directory: the order of a recursive walk, at any depth
        stack = [iter(self._entries(self.root))]
        seen = {_identity(self.root)}
        while stack:
            entry = next(stack[-1], None)
            if entry is None:
                stack.pop()
                continue
            try:
                if entry.is_symlink():
                    ref = self._link(entry)
                elif entry.is_dir(follow_symlinks=False):
                    key = _identity(entry.path)
                    if key in seen:  # a bind mount of an ancestor
                        self.skip("loop")
                        continue
                    seen.add(key)
                    stack.append(iter(self._entries(entry.path)))
                    continue
                else:
                    ref = self._file(entry.path, entry.stat(follow_symlinks=False).st_mode, entry.name)
            except OSError:
                self.skip("unreadable")
                continue
            if ref is not None:
                yield ref

    def _entries(self, directory: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError:
            # An unreadable sub-directory is not a reason to stop the whole scan.
            self.skip("unreadable_directory")
            return []

    def _link(self, entry: os.DirEntry[str]) -> str | None:
        """The ref a symbolic link stands for, or None with the reason counted."""
        try:
            mode = os.stat(entry.path).st_mode
        except FileNotFoundError:
            self.skip("dangling_link")
            return None
        except OSError as exc:
            self.skip("loop" if exc.errno == errno.ELOOP else "dangling_link")
            return None
        target = os.path.realpath(entry.path)
        if stat.S_ISDIR(mode):
            self.skip("link_to_directory")
            return None
        if _inside(target, self.root):
            self.skip("link_inside_root")  # the walk reaches the target under its own name
            return None
        if not self.follow_links_outside_root:
            self.skip("link_outside_root")
            return None
        return self._file(target, mode, os.path.basename(target))

    def _file(self, path: str, mode: int, name: str) -> str | None:
        kind = file_kind(mode)
        if kind != "file":
            self.skip(kind)
            return None
        if _is_image(path, name):
            return path
        self.skip("not_an_image")
        return None


def _identity(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_image(path: str, name: str) -> bool:
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        fd = _open_regular(path)
    except (OSError, FetchError):
        return False
    with os.fdopen(fd, "rb") as fh:
        return sniff_image(fh.read(32))


def _open_regular(path: str) -> int:
    """A descriptor of ``path`` when it is a regular file reached without any symbolic link; never blocks."""
    if os.path.realpath(path) != os.path.abspath(path):
        raise FetchError(ErrorKind.UNREADABLE, "the path now passes through a symbolic link; not followed")
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the file itself was replaced by a link
            raise FetchError(ErrorKind.UNREADABLE, "the file is now a symbolic link; not followed") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a directory")
        raise FetchError(ErrorKind.NOT_AN_IMAGE, f"is a {file_kind(mode)}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def read_local(path: str, max_bytes: int) -> bytes:
    """The bytes of one local image, or a FetchError naming why not."""
    try:
        with os.fdopen(_open_regular(path), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise FetchError(ErrorKind.TOO_LARGE, f"file is {size} bytes, the limit is {max_bytes}")
            # one read takes a regular file whole; the cap holds for one that grows meanwhile
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
