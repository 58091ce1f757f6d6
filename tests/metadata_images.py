"""Small images carrying provenance metadata, built in memory: PNG text chunks, JPEG XMP and EXIF,
generator parameters (Stable Diffusion web UI, ComfyUI) and raw chunks for hostile cases."""

from __future__ import annotations

import io
import json
import struct
import zlib
from typing import Literal

from PIL import Image
from PIL.PngImagePlugin import PngInfo

IPTC_URI = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TextKind = Literal["tEXt", "zTXt", "iTXt"]
Form = Literal["attribute", "element", "resource"]
Charset = Literal["ascii", "unicode-be", "unicode-le", "undefined"]


def _picture(size: tuple[int, int]) -> Image.Image:
    """A small gradient: content does not matter, only the metadata around it."""
    return Image.linear_gradient("L").resize(size).convert("RGB")


def png_with_text(texts: dict[str, str], size: tuple[int, int] = (64, 48), kind: TextKind = "tEXt") -> bytes:
    """A PNG whose text chunks (``kind``: tEXt, zTXt or iTXt) hold ``texts``."""
    info = PngInfo()
    for key, value in texts.items():
        if kind == "iTXt":
            info.add_itxt(key, value, zip=True)
        else:
            info.add_text(key, value, zip=kind == "zTXt")
    buf = io.BytesIO()
    _picture(size).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_chunks(chunks: list[bytes], size: tuple[int, int] = (16, 16)) -> bytes:
    """A PNG with raw ``chunks`` (from :func:`png_chunk`) inserted right after IHDR."""
    buf = io.BytesIO()
    _picture(size).save(buf, "PNG")
    data = buf.getvalue()
    ihdr_end = 8 + 8 + 13 + 4
    return data[:ihdr_end] + b"".join(chunks) + data[ihdr_end:]


def jpeg_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    """A plain JPEG without metadata segments other than JFIF."""
    buf = io.BytesIO()
    _picture(size).save(buf, "JPEG", quality=80)
    return buf.getvalue()


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    """One JPEG marker segment (``marker`` 0xE1 for APP1, 0xEB for APP11, ...); payload up to 65533 bytes."""
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_segments(segments: list[bytes], size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG with raw ``segments`` (from :func:`jpeg_segment`) inserted right after SOI."""
    data = jpeg_bytes(size)
    return data[:2] + b"".join(segments) + data[2:]


def jpeg_with_xmp(xmp: bytes | str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG with one standard XMP APP1 segment holding ``xmp``."""
    packet = xmp.encode() if isinstance(xmp, str) else xmp
    return jpeg_with_segments([jpeg_segment(0xE1, b"http://ns.adobe.com/xap/1.0/\x00" + packet)], size)


def jumbf_app11(size: int, box_instance: int = 1) -> list[bytes]:
    """APP11 segments carrying one opaque JUMBF superbox of ``size`` bytes (at least 8), split as JPEG
    does: each segment starts with CI ``JP``, the box instance and a sequence number; each continuation
    repeats the superbox's 8-byte header."""
    body = struct.pack(">I", size) + b"jumb" + bytes(size - 8)
    segments, chunk = [], 65000
    for seq, start in enumerate(range(0, size, chunk), start=1):
        header = b"JP" + struct.pack(">HI", box_instance, seq)
        repeat = body[:8] if start else b""
        segments.append(jpeg_segment(0xEB, header + repeat + body[start : start + chunk]))
    return segments


def xmp_packet(
    source_type: str | None,
    form: Form = "attribute",
    creator_tool: str | None = None,
    provenance: str | None = None,
    description: str | None = None,
) -> str:
    """An XMP packet declaring IPTC ``source_type`` (short form or URI) in ``form``, plus optional fields."""
    uri = None if source_type is None else source_type if "/" in source_type else IPTC_URI + source_type
    attrs, elements = [], []
    if uri is not None:
        if form == "attribute":
            attrs.append(f'Iptc4xmpExt:DigitalSourceType="{uri}"')
        elif form == "element":
            elements.append(f"<Iptc4xmpExt:DigitalSourceType>{uri}</Iptc4xmpExt:DigitalSourceType>")
        else:
            elements.append(f'<Iptc4xmpExt:DigitalSourceType rdf:resource="{uri}"/>')
    if creator_tool is not None:
        attrs.append(f'xmp:CreatorTool="{creator_tool}"')
    if provenance is not None:
        attrs.append(f'dcterms:provenance="{provenance}"')
    if description is not None:
        elements.append(
            "<dc:description><rdf:Alt>"
            f'<rdf:li xml:lang="x-default">{description}</rdf:li>'
            "</rdf:Alt></dc:description>"
        )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '<rdf:Description rdf:about=""\n'
        ' xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"\n'
        ' xmlns:xmp="http://ns.adobe.com/xap/1.0/"\n'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/"\n'
        ' xmlns:dcterms="http://purl.org/dc/terms/"\n'
        f" {' '.join(attrs)}>\n"
        f"{''.join(elements)}\n"
        "</rdf:Description>\n</rdf:RDF>\n</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


def user_comment(text: str, charset: Charset) -> bytes:
    """An EXIF UserComment value: the 8-byte charset header, then ``text`` in that charset."""
    if charset == "ascii":
        return b"ASCII\x00\x00\x00" + text.encode("ascii")
    if charset == "unicode-be":
        return b"UNICODE\x00" + text.encode("utf-16-be")
    if charset == "unicode-le":
        return b"UNICODE\x00" + text.encode("utf-16-le")
    return b"\x00" * 8 + text.encode()


def exif_bytes(
    software: str | None = None,
    make: str | None = None,
    model: str | None = None,
    user_comment: bytes | None = None,
    artist: str | None = None,
    description: str | None = None,
) -> bytes:
    """An EXIF block as Pillow writes it (``Exif\\0\\0`` then TIFF) with the given tags."""
    exif = Image.Exif()
    for tag, value in (
        (0x0131, software),
        (0x010F, make),
        (0x0110, model),
        (0x013B, artist),
        (0x010E, description),
    ):
        if value is not None:
            exif[tag] = value
    if user_comment is not None:
        exif.get_ifd(0x8769)[0x9286] = user_comment
    return exif.tobytes()


def jpeg_with_exif(
    software: str | None = None,
    make: str | None = None,
    model: str | None = None,
    user_comment: bytes | None = None,
    artist: str | None = None,
    description: str | None = None,
    size: tuple[int, int] = (64, 48),
) -> bytes:
    """A JPEG whose EXIF holds the given tags (``user_comment`` as from :func:`user_comment`)."""
    buf = io.BytesIO()
    exif = exif_bytes(software, make, model, user_comment, artist, description)
    _picture(size).save(buf, "JPEG", quality=80, exif=exif)
    return buf.getvalue()


def webp_with_exif_xmp(
    exif: bytes | None = None, xmp: str | None = None, size: tuple[int, int] = (32, 32)
) -> bytes:
    """A WebP (extended format) with Pillow's EXIF and XMP chunks."""
    buf = io.BytesIO()
    params: dict[str, object] = {"lossless": True}
    if exif is not None:
        params["exif"] = exif
    if xmp is not None:
        params["xmp"] = xmp.encode()
    _picture(size).save(buf, "WEBP", **params)
    return buf.getvalue()


def a1111_parameters(model: str = "v1-5-pruned-emaonly", prompt: str = "a lighthouse at dusk") -> str:
    """Stable Diffusion web UI's ``parameters`` text for one image made with checkpoint ``model``."""
    return (
        f"{prompt}, highly detailed\n"
        "Negative prompt: blurry, lowres\n"
        "Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234567890, Size: 512x512, "
        f"Model hash: 6ce0161689, Model: {model}, Version: v1.7.0"
    )


def a1111_png(model: str = "v1-5-pruned-emaonly", size: tuple[int, int] = (64, 48)) -> bytes:
    """A PNG as Stable Diffusion web UI saves it: a ``parameters`` tEXt chunk."""
    return png_with_text({"parameters": a1111_parameters(model)}, size)


def comfyui_prompt(ckpt: str = "sd_xl_base_1.0.safetensors") -> dict[str, object]:
    """A ComfyUI API prompt graph: checkpoint loader, text encoders, sampler, decoder, saver."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox in snow", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 42,
                "steps": 25,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def comfyui_workflow(ckpt: str = "sd_xl_base_1.0.safetensors") -> dict[str, object]:
    """A ComfyUI UI workflow: nodes with their type and widget values."""
    return {
        "last_node_id": 9,
        "nodes": [
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": [ckpt]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a red fox in snow"]},
            {"id": 3, "type": "KSampler", "widgets_values": [42, "fixed", 25, 7.0, "euler", "normal", 1.0]},
            {"id": 9, "type": "SaveImage", "widgets_values": ["ComfyUI"]},
        ],
        "version": 0.4,
    }


def comfyui_png(
    ckpt: str = "sd_xl_base_1.0.safetensors", workflow: bool = True, size: tuple[int, int] = (64, 48)
) -> bytes:
    """A PNG as ComfyUI's SaveImage writes it: ``prompt`` and (by default) ``workflow`` JSON text chunks."""
    texts = {"prompt": json.dumps(comfyui_prompt(ckpt))}
    if workflow:
        texts["workflow"] = json.dumps(comfyui_workflow(ckpt))
    return png_with_text(texts, size)
