"""Local walks: any depth without recursion, links kept inside the root, every entry a ref or a counted
skip; reads that never block and never follow a link planted after planning."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from aiscan.jobs.errors import FetchError
from aiscan.jobs.settings import Settings
from aiscan.jobs.sources import open_source
from aiscan.jobs.sources.local import LocalSource, file_kind, read_local
from aiscan.model.errors import ErrorKind

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256))


def entries_under(root: Path) -> int:
    """Every directory entry below ``root`` that is not itself a real directory (links count as entries)."""
    count = 0
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            count += entries_under(Path(entry.path))
        else:
            count += 1
    return count


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root holding every kind of entry a walk meets, and a neighbour's directory beside it."""
    other = tmp_path / "other-tenant"
    other.mkdir()
    (other / "secret.jpg").write_bytes(JPEG)
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(JPEG)
    (root / "sub" / "b.png").write_bytes(JPEG)
    (root / "sniffed").write_bytes(JPEG)  # no extension, JPEG content
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(root / "s.sock"))
    sock.close()
    (root / "env.jpg").symlink_to("/proc/self/environ")
    (root / "neighbour.jpg").symlink_to(other / "secret.jpg")
    (root / "gone.jpg").symlink_to(root / "nothing-here.jpg")
    (root / "sub" / "up").symlink_to("..")  # a loop through a directory link
    (root / "loop1.jpg").symlink_to(root / "loop2.jpg")
    (root / "loop2.jpg").symlink_to(root / "loop1.jpg")
    (root / "alias.jpg").symlink_to(root / "a.jpg")
    (root / "null.jpg").symlink_to("/dev/null")
    return root


def test_every_entry_is_a_ref_or_a_counted_skip(tree: Path) -> None:
    source = LocalSource(str(tree))
    refs = list(source.iter_refs())
    assert refs == [str(tree / "a.jpg"), str(tree / "sniffed"), str(tree / "sub" / "b.png")]
    assert source.skip_reasons == {
        "not_an_image": 1,
        "fifo": 1,
        "socket": 1,
        "link_outside_root": 3,  # /proc/self/environ, the neighbour's file, /dev/null
        "dangling_link": 1,
        "link_to_directory": 1,
        "loop": 2,
        "link_inside_root": 1,
    }
    assert source.skipped == sum(source.skip_reasons.values())
    assert len(refs) + source.skipped == entries_under(tree)


def test_links_out_of_the_root_are_followed_only_when_allowed(tree: Path, tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"AISCAN_HOME": str(tmp_path / "home"), "AISCAN_FOLLOW_LINKS_OUTSIDE_ROOT": "1"}
    )
    source = open_source(str(tree), settings)
    refs = list(source.iter_refs())
    # the target's real path is the ref; /proc/self/environ is a regular file but not an image
    assert str(tmp_path / "other-tenant" / "secret.jpg") in refs
    assert source.skip_reasons["device"] == 1 and "link_outside_root" not in source.skip_reasons
    assert len(refs) + source.skipped == entries_under(tree)
    assert read_local(str(tmp_path / "other-tenant" / "secret.jpg"), 1000) == JPEG


def test_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    deepest = str(tmp_path / "root")
    os.mkdir(deepest)
    for _ in range(1200):  # one level at a time: pathlib's mkdir(parents=True) itself recurses
        deepest = os.path.join(deepest, "d")
        os.mkdir(deepest)
    with open(os.path.join(deepest, "deep.jpg"), "wb") as fh:
        fh.write(JPEG)
    (tmp_path / "root" / "d" / "back").symlink_to(tmp_path / "root")
    try:
        source = LocalSource(str(tmp_path / "root"))
        assert list(source.iter_refs()) == [os.path.join(deepest, "deep.jpg")]
        assert source.skip_reasons == {"link_to_directory": 1}
    finally:
        # bottom up, one level at a time: shutil.rmtree (and pytest's clean-up with it) would recurse
        os.unlink(os.path.join(deepest, "deep.jpg"))
        os.unlink(tmp_path / "root" / "d" / "back")
        while deepest != str(tmp_path):
            os.rmdir(deepest)
            deepest = os.path.dirname(deepest)


def test_the_root_is_stored_as_its_real_path(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "via-link").symlink_to(tree)
    source = LocalSource(str(tmp_path / "via-link"))
    assert source.spec == str(tree)
    assert next(source.iter_refs()) == str(tree / "a.jpg")


def test_a_fifo_in_place_of_a_planned_file_is_an_error_at_once(tmp_path: Path) -> None:
    planned = tmp_path / "planned.jpg"
    os.mkfifo(planned)  # a blocking open() would wait for a writer forever
    with pytest.raises(FetchError, match="is a fifo, not a regular file") as info:
        read_local(str(planned), 1000)
    assert info.value.error_kind == ErrorKind.NOT_AN_IMAGE
    with pytest.raises(FetchError, match="device") as info:
        read_local("/dev/zero", 1000)
    assert file_kind(os.stat("/dev/null").st_mode) == "device"
    assert file_kind(stat.S_IFIFO) == "fifo"


def test_a_link_planted_after_planning_is_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(JPEG)
    (root / "b.jpg").write_bytes(JPEG)
    refs = list(LocalSource(str(root)).iter_refs())
    assert refs == [str(root / "b.jpg"), str(root / "sub" / "a.jpg")]
    # the file itself replaced by a link out of the root
    (root / "b.jpg").unlink()
    (root / "b.jpg").symlink_to("/proc/self/environ")
    # a directory on the way replaced by a link to another tenant's files
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.jpg").write_bytes(JPEG)
    (root / "sub" / "a.jpg").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(other)
    for ref in refs:
        with pytest.raises(FetchError, match="symbolic link") as info:
            read_local(ref, 1000)
        assert info.value.error_kind == ErrorKind.UNREADABLE
