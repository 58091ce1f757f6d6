"""Image refs and text in forms every supported database stores: a display form, a key, a lossless code.

A ref may hold what PostgreSQL refuses in text: a NUL byte, or the lone surrogates Python uses for a file
name's non-UTF-8 bytes. Such a ref is shown with backslash escapes, keyed by a hash of its exact code
points, and kept losslessly as base64 of its ``surrogatepass`` UTF-8 so it can be fetched again.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

# NUL, and every surrogate: the code points that are not storable as UTF-8 text.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The key of a chunk's encoded ref in chunks.refs.
B64 = "b64"


def _escape(match: re.Match[str]) -> str:
    point = ord(match.group())
    if 0xDC80 <= point <= 0xDCFF:
        # A byte that os.fsdecode could not decode (surrogateescape): shown as the byte it was.
        return f"\\x{point - 0xDC00:02x}"
    if point == 0:
        return "\\x00"
    return f"\\u{point:04x}"


def is_clean(text: str) -> bool:
    """True when ``text`` is storable as it is: valid UTF-8 without NUL."""
    return _UNSTORABLE.search(text) is None


def storable_text(text: str, limit: int | None = None) -> str:
    """``text`` with NUL and surrogates shown as backslash escapes, cut to ``limit`` characters."""
    shown = _UNSTORABLE.sub(_escape, text)
    return shown if limit is None else shown[:limit]


def display_ref(ref: str) -> str:
    """The form of a ref stored in results.image_uri and shown in reports."""
    return storable_text(ref)


def _exact_bytes(ref: str) -> bytes:
    # surrogatepass is injective on every str and equals UTF-8 for a clean one (so SQL can backfill keys);
    # surrogateescape would map "\udcc3\udca9" and "é" to the same bytes.
    return ref.encode("utf-8", "surrogatepass")


def uri_key(ref: str) -> str:
    """The ref's unique key in its job: sha256 hex of its exact code points, whatever its length."""
    return hashlib.sha256(_exact_bytes(ref)).hexdigest()


def encode_ref(ref: str) -> str:
    """A lossless ASCII code of any ref (base64)."""
    return base64.b64encode(_exact_bytes(ref)).decode("ascii")


def decode_ref(code: str) -> str:
    """The ref that :func:`encode_ref` coded."""
    return base64.b64decode(code).decode("utf-8", "surrogatepass")


def stored_original(ref: str) -> str | None:
    """What results.ref holds: the ref's code when its display form differs from it, else None."""
    return None if is_clean(ref) else encode_ref(ref)


def original_ref(image_uri: str, ref: str | None) -> str:
    """The ref a result row was made from, from its image_uri and ref columns."""
    return image_uri if ref is None else decode_ref(ref)


def pack_refs(refs: list[str]) -> list[Any]:
    """A list of refs as JSON every database stores: unclean refs become ``{"b64": code}`` objects."""
    return [ref if is_clean(ref) else {B64: encode_ref(ref)} for ref in refs]


def unpack_refs(items: list[Any]) -> list[str]:
    """The refs :func:`pack_refs` packed (plain strings pass through, as older rows hold them)."""
    return [decode_ref(item[B64]) if isinstance(item, dict) else item for item in items]
