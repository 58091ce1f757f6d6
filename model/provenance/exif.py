"""The few EXIF tags provenance cares about, read by a small bounded TIFF directory walker.

Camera tags (Make, Model) are recorded, never taken as evidence of a photograph: they are trivial to forge.
"""

from __future__ import annotations

from typing import Literal

MAX_VALUE_BYTES = 64 << 10
MAX_ENTRIES = 512  # per directory

# IFD0 tags kept, by name; UserComment lives in the Exif sub-directory (some writers put it in IFD0).
IFD0_TAGS = {
    0x010E: "ImageDescription",
    0x010F: "Make",
    0x0110: "Model",
    0x0131: "Software",
    0x013B: "Artist",
    0x9286: "UserComment",
}
EXIF_TAGS = {0x9286: "UserComment"}
_EXIF_IFD = 0x8769
_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_EXIF_HEADER = b"Exif\x00\x00"


def read_exif(payload: bytes) -> dict[str, str]:
    """Software, Make, Model, Artist, ImageDescription and UserComment as text; a ``note`` on damage."""
    data = payload[len(_EXIF_HEADER) :] if payload.startswith(_EXIF_HEADER) else payload
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return {"note": "EXIF without a TIFF header"} if data else {}
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    out: dict[str, str] = {}
    notes: list[str] = []
    ifd0 = _directory(data, int.from_bytes(data[4:8], order), order, notes)
    for tag, (kind, value) in ifd0.items():
        if tag in IFD0_TAGS:
            out[IFD0_TAGS[tag]] = _text(tag, kind, value)
    pointer = ifd0.get(_EXIF_IFD)
    if pointer is not None and len(pointer[1]) == 4:
        sub = _directory(data, int.from_bytes(pointer[1], order), order, notes)
        for tag, (kind, value) in sub.items():
            if tag in EXIF_TAGS:
                out[EXIF_TAGS[tag]] = _text(tag, kind, value)
    out = {key: value for key, value in out.items() if value}
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _directory(
    data: bytes, offset: int, order: Literal["little", "big"], notes: list[str]
) -> dict[int, tuple[int, bytes]]:
    """One IFD's entries of kept tags: tag -> (type, raw value bytes), each value capped."""
    wanted = IFD0_TAGS.keys() | EXIF_TAGS.keys() | {_EXIF_IFD}
    if offset < 8 or offset + 2 > len(data):
        notes.append(f"EXIF directory offset {offset} outside the payload")
        return {}
    count = int.from_bytes(data[offset : offset + 2], order)
    if count > MAX_ENTRIES:
        notes.append(f"EXIF directory of {count} entries: first {MAX_ENTRIES} read")
    entries: dict[int, tuple[int, bytes]] = {}
    for i in range(min(count, MAX_ENTRIES)):
        at = offset + 2 + 12 * i
        if at + 12 > len(data):
            notes.append("EXIF directory truncated")
            break
        tag = int.from_bytes(data[at : at + 2], order)
        if tag not in wanted or tag in entries:
            continue
        kind = int.from_bytes(data[at + 2 : at + 4], order)
        size = int.from_bytes(data[at + 4 : at + 8], order) * _SIZES.get(kind, 1)
        start = int.from_bytes(data[at + 8 : at + 12], order) if size > 4 else at + 8
        if start + size > len(data):
            notes.append(f"EXIF tag 0x{tag:04X} runs past the payload")
            size = max(0, len(data) - start)
        entries[tag] = (kind, data[start : start + min(size, MAX_VALUE_BYTES)])
    return entries


def _text(tag: int, kind: int, value: bytes) -> str:
    if tag == 0x9286 and kind != 2:
        return decode_user_comment(value)
    return _decode(value.split(b"\x00", 1)[0] if kind == 2 else value.rstrip(b"\x00"))


def _decode(raw: bytes) -> str:
    """ASCII tags hold UTF-8 more often than not; Latin-1 when that fails."""
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def decode_user_comment(value: bytes) -> str:
    """A UserComment's text after its 8-byte charset header (ASCII, UNICODE, JIS or undefined)."""
    header, body = value[:8], value[8:]
    if header == b"UNICODE\x00":
        return _utf16(body).rstrip("\x00").strip()
    if header == b"JIS\x00\x00\x00\x00\x00":
        return body.decode("shift_jis", errors="replace").rstrip("\x00").strip()
    if header == b"ASCII\x00\x00\x00" or header == b"\x00" * 8:
        return _decode(body.rstrip(b"\x00"))
    return _decode(value.rstrip(b"\x00"))


def _utf16(body: bytes) -> str:
    """UTF-16 text of either byte order: writers disagree, so a BOM or the zero bytes' side decides."""
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return body.decode("utf-16", errors="replace")
    sample = body[:512]
    zeros_even = sample[0::2].count(0)
    zeros_odd = sample[1::2].count(0)
    return body.decode("utf-16-le" if zeros_odd > zeros_even else "utf-16-be", errors="replace")
