"""Metadata segments of an image file, found by walking its structure's length fields; pixels are never
decoded. Every count, size and inflation is capped; what was cut or malformed is named in ``notes``."""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Literal

# A larger embedded C2PA store is not validated (reader.py says so in the evidence).
MAX_MANIFEST_BYTES = 16 << 20
MAX_TEXT_BYTES = 64 << 10  # one text chunk's value, after inflation
MAX_TEXT_TOTAL = 1 << 20  # all text values together
MAX_TEXTS = 64
MAX_XMP_BYTES = 1 << 20  # one XMP packet
MAX_XMP_PACKETS = 4
MAX_EXIF_BYTES = 1 << 20
# Structures walked per file: a PNG of a few hundred megapixels holds a few thousand IDAT chunks.
MAX_CHUNKS = 20_000
MAX_NOTES = 16

XMP_KEYWORD = "XML:com.adobe.xmp"
_XMP_APP1 = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXT_APP1 = b"http://ns.adobe.com/xmp/extension/\x00"
_EXIF_HEADER = b"Exif\x00\x00"
_C2PA_UUID = bytes.fromhex("d8fec3d61b0e483c92975828877ec481")
_XMP_START = b"<x:xmpmeta"
_XMP_END = b"</x:xmpmeta>"
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"}
_KEYWORD = re.compile(r"[^\x20-\x7e\xa1-\xff]")


@dataclass
class Segments:
    """Metadata found in one file's structure."""

    mime: str | None = None
    texts: dict[str, str] = field(default_factory=dict)
    xmp: list[bytes] = field(default_factory=list)
    exif: bytes | None = None
    c2pa_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def sniff_mime(data: bytes) -> str | None:
    """The image type the magic bytes name, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[4:8] == b"ftyp":
        size = int.from_bytes(data[:4], "big")
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, min(size, 64), 4)}
        if brands & {b"avif", b"avis"}:
            return "image/avif"
        if brands & _HEIF_BRANDS:
            return "image/heif"
    return None


class _Collector:
    """Segments under construction, with the budgets that bound them."""

    def __init__(self, mime: str | None) -> None:
        self.out = Segments(mime=mime)
        self.text_total = 0
        self.texts_skipped = 0
        self.chunks = 0

    def note(self, text: str) -> None:
        if len(self.out.notes) < MAX_NOTES:
            self.out.notes.append(text)

    def count_chunk(self) -> bool:
        """False once the structure budget is spent (noted once)."""
        self.chunks += 1
        if self.chunks > MAX_CHUNKS:
            self.note(f"more than {MAX_CHUNKS} structures: the rest of the file was not walked")
            return False
        return True

    def text(self, key: str, value: bytes, encoding: str) -> None:
        key = _KEYWORD.sub("", key)[:79] or "?"
        if key in self.out.texts:
            return
        if len(self.out.texts) >= MAX_TEXTS or self.text_total + len(value) > MAX_TEXT_TOTAL:
            self.texts_skipped += 1
            return
        self.text_total += len(value)
        self.out.texts[key] = value.decode(encoding, errors="replace").rstrip("\x00")

    def xmp(self, packet: bytes | memoryview, where: str) -> None:
        if len(self.out.xmp) >= MAX_XMP_PACKETS:
            self.note(f"XMP packet in {where} skipped: more than {MAX_XMP_PACKETS} packets")
        elif len(packet) > MAX_XMP_BYTES:
            self.note(f"XMP packet of {len(packet)} bytes in {where} skipped: over {MAX_XMP_BYTES}")
        else:
            self.out.xmp.append(bytes(packet))

    def exif(self, payload: memoryview, where: str) -> None:
        if self.out.exif is not None:
            return
        if len(payload) > MAX_EXIF_BYTES:
            self.note(f"EXIF of {len(payload)} bytes in {where} cut to {MAX_EXIF_BYTES}")
        exif = bytes(payload[:MAX_EXIF_BYTES])
        self.out.exif = exif[len(_EXIF_HEADER) :] if exif.startswith(_EXIF_HEADER) else exif

    def finish(self) -> Segments:
        if self.texts_skipped:
            self.note(
                f"{self.texts_skipped} text chunks skipped: over {MAX_TEXTS} chunks or {MAX_TEXT_TOTAL} bytes"
            )
        return self.out


def scan_containers(data: bytes) -> Segments:
    """The metadata segments of ``data``; hostile or truncated input gives what was found, and notes."""
    mime = sniff_mime(data)
    found = _Collector(mime)
    view = memoryview(data)
    if mime == "image/png":
        _png(view, found)
    elif mime == "image/jpeg":
        _jpeg(view, found)
    elif mime == "image/webp":
        _riff(view, found)
    elif mime == "image/tiff":
        _tiff(view, found)
    elif mime in ("image/avif", "image/heif"):
        _bmff(view, found)
    if not found.out.xmp and mime not in ("image/png", "image/jpeg", "image/webp"):
        _search_xmp(data, found)
    return found.finish()


def inflate(data: memoryview | bytes, cap: int) -> tuple[bytes, bool]:
    """``data`` zlib-inflated to at most ``cap`` bytes; True when more was left (or it is corrupt)."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, cap)
    except zlib.error:
        return b"", True
    return out, bool(inflater.unconsumed_tail) or not inflater.eof


def _png(view: memoryview, found: _Collector) -> None:
    pos, end = 8, len(view)
    while found.count_chunk():
        if pos + 8 > end:
            found.note("PNG truncated before IEND")
            return
        length, kind = struct.unpack_from(">I4s", view, pos)
        body_start = pos + 8
        truncated = body_start + length > end
        if truncated:
            found.note(f"PNG chunk {kind!r} of {length} bytes runs past the end of the file")
            # What is there of a metadata chunk is still worth reading.
            length = end - body_start
        body = view[body_start : body_start + length]
        if kind == b"IEND":
            return
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            _png_text(kind, body, found)
        elif kind == b"eXIf":
            found.exif(body, "PNG eXIf")
        elif kind == b"caBX":
            found.out.c2pa_bytes += length
        if truncated:
            return
        pos = body_start + length + 4


def _png_text(kind: bytes, body: memoryview, found: _Collector) -> None:
    raw = bytes(body[:80])
    sep = raw.find(b"\x00")
    if sep < 1:
        found.note(f"PNG {kind.decode()} chunk without a keyword skipped")
        return
    key = raw[:sep].decode("latin-1")
    is_xmp = key == XMP_KEYWORD
    cap = MAX_XMP_BYTES if is_xmp else MAX_TEXT_BYTES
    rest = body[sep + 1 :]
    compressed, encoding = False, "latin-1"
    if kind == b"zTXt":
        compressed, rest = True, rest[1:]
    elif kind == b"iTXt":
        compressed, encoding = bool(rest[:1] == b"\x01"), "utf-8"
        # compression flag, method, language tag\0, translated keyword\0, text
        header = bytes(rest[2 : 2 + 2 * 1024])
        lang_end = header.find(b"\x00")
        trans_end = header.find(b"\x00", lang_end + 1) if lang_end >= 0 else -1
        if trans_end < 0:
            found.note(f"PNG iTXt chunk {key!r} malformed: skipped")
            return
        rest = rest[2 + trans_end + 1 :]
    if compressed:
        value, cut = inflate(rest, cap)
    else:
        value, cut = bytes(rest[:cap]), len(rest) > cap
    if cut and is_xmp:
        # A cut packet is not XML: skipped whole.
        found.note(f"PNG {kind.decode()} XMP packet over {cap} bytes (or corrupt): skipped")
        return
    if cut:
        what = "inflated" if compressed else f"of {len(rest)} bytes"
        found.note(f"PNG {kind.decode()} chunk {key!r} {what} cut to {cap} bytes")
    if is_xmp:
        found.xmp(value, "PNG iTXt")
    else:
        found.text(key, value, encoding)


def _jpeg(view: memoryview, found: _Collector) -> None:
    pos, end = 2, len(view)
    while found.count_chunk():
        if pos + 2 > end:
            found.note("JPEG truncated before its image data")
            return
        if view[pos] != 0xFF:
            found.note(f"JPEG marker expected at byte {pos}: rest not walked")
            return
        fill = pos + 1
        while fill < end and view[fill] == 0xFF and fill - pos < 64:
            fill += 1
        if fill >= end or view[fill] == 0xFF:
            found.note(f"JPEG fill bytes at {pos} not followed by a marker")
            return
        marker, pos = view[fill], fill + 1
        if marker in (0xD9, 0xDA):  # EOI, SOS: no metadata follows the image data's start
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if pos + 2 > end:
            found.note("JPEG truncated in a segment header")
            return
        length = struct.unpack_from(">H", view, pos)[0]
        if length < 2 or pos + length > end:
            found.note(f"JPEG segment 0x{marker:02X} of {length} bytes runs past the end of the file")
            return
        _jpeg_segment(marker, view[pos + 2 : pos + length], found)
        pos += length


def _jpeg_segment(marker: int, payload: memoryview, found: _Collector) -> None:
    head = bytes(payload[:40])
    if marker == 0xE1 and head.startswith(_EXIF_HEADER):
        found.exif(payload, "JPEG APP1")
    elif marker == 0xE1 and head.startswith(_XMP_APP1):
        found.xmp(payload[len(_XMP_APP1) :], "JPEG APP1")
    elif marker == 0xE1 and head.startswith(_XMP_EXT_APP1):
        if "extended XMP" not in " ".join(found.out.notes):
            found.note("JPEG extended XMP segments not read (only the standard packet is)")
    elif marker == 0xEB and head[:2] == b"JP" and len(head) >= 16:
        # JUMBF: CI, box instance, sequence number, then the superbox header each segment repeats.
        sequence = int.from_bytes(head[4:8], "big")
        found.out.c2pa_bytes += len(payload) - 8 - (8 if sequence > 1 else 0)
    elif marker == 0xFE:
        value = bytes(payload[:MAX_TEXT_BYTES])
        found.text("Comment", value, "utf-8")


def _riff(view: memoryview, found: _Collector) -> None:
    riff_end = min(len(view), 8 + int.from_bytes(view[4:8], "little"))
    pos = 12
    while found.count_chunk():
        if pos + 8 > riff_end:
            if riff_end < 8 + int.from_bytes(view[4:8], "little"):
                found.note("WebP truncated in its chunk list")
            return
        kind = bytes(view[pos : pos + 4])
        size = int.from_bytes(view[pos + 4 : pos + 8], "little")
        body_start = pos + 8
        if body_start + size > riff_end:
            found.note(f"WebP chunk {kind!r} of {size} bytes runs past the end of the file")
            size = riff_end - body_start
        body = view[body_start : body_start + size]
        if kind == b"EXIF":
            found.exif(body, "WebP EXIF")
        elif kind == b"XMP ":
            found.xmp(body, "WebP XMP")
        elif kind == b"C2PA":
            found.out.c2pa_bytes += size
        pos = body_start + size + (size & 1)


def _tiff(view: memoryview, found: _Collector) -> None:
    order: Literal["little", "big"] = "little" if view[:2] == b"II" else "big"
    # The whole file is the EXIF structure; camera tags sit near its start.
    found.out.exif = bytes(view[:MAX_EXIF_BYTES])
    if len(view) < 8:
        found.note("TIFF truncated in its header")
        return
    offset = int.from_bytes(view[4:8], order)
    if offset + 2 > len(view):
        found.note("TIFF first directory past the end of the file")
        return
    count = int.from_bytes(view[offset : offset + 2], order)
    sizes = {1: 1, 2: 1, 6: 1, 7: 1}
    for i in range(min(count, 1024)):
        entry = offset + 2 + 12 * i
        if entry + 12 > len(view):
            found.note("TIFF first directory truncated")
            return
        tag = int.from_bytes(view[entry : entry + 2], order)
        kind = int.from_bytes(view[entry + 2 : entry + 4], order)
        length = int.from_bytes(view[entry + 4 : entry + 8], order) * sizes.get(kind, 1)
        start = int.from_bytes(view[entry + 8 : entry + 12], order) if length > 4 else entry + 8
        if tag == 700:  # XMP
            if start + length > len(view):
                found.note("TIFF XMP tag runs past the end of the file")
            else:
                found.xmp(view[start : start + length], "TIFF tag 700")
        elif tag == 0xCD41:  # C2PA manifest store
            found.out.c2pa_bytes += length


def _bmff(view: memoryview, found: _Collector) -> None:
    """Top-level ISO BMFF boxes: a C2PA store is a ``uuid`` box with the C2PA UUID."""
    pos, end = 0, len(view)
    while found.count_chunk() and pos + 8 <= end:
        size = int.from_bytes(view[pos : pos + 4], "big")
        kind = bytes(view[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                break
            size, header = int.from_bytes(view[pos + 8 : pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header:
            found.note(f"BMFF box {kind!r} with size {size}: rest not walked")
            return
        if kind == b"uuid" and bytes(view[pos + header : pos + header + 16]) == _C2PA_UUID:
            found.out.c2pa_bytes += min(size, end - pos)
        pos += size


def _search_xmp(data: bytes, found: _Collector) -> None:
    """XMP packets wherever they lie (GIF, HEIF, unknown types): a bounded search for their tags."""
    pos = 0
    for _ in range(MAX_XMP_PACKETS * 2):
        start = data.find(_XMP_START, pos)
        if start < 0:
            return
        stop = data.find(_XMP_END, start, start + MAX_XMP_BYTES)
        if stop < 0:
            found.note(f"XMP packet at byte {start} has no end within {MAX_XMP_BYTES} bytes: skipped")
            pos = start + len(_XMP_START)
            continue
        found.xmp(memoryview(data)[start : stop + len(_XMP_END)], "file")
        pos = stop + len(_XMP_END)
