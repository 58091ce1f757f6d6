"""Container walking, EXIF and generator metadata, from real files; hostile files stop at the caps."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

import pytest
from metadata_images import (
    Charset,
    TextKind,
    a1111_parameters,
    a1111_png,
    comfyui_png,
    comfyui_prompt,
    comfyui_workflow,
    exif_bytes,
    jpeg_bytes,
    jpeg_segment,
    jpeg_with_exif,
    jpeg_with_segments,
    jpeg_with_xmp,
    jumbf_app11,
    png_chunk,
    png_with_chunks,
    png_with_text,
    user_comment,
    webp_with_exif_xmp,
    xmp_packet,
)
from PIL import Image

from aiscan.model.provenance.containers import (
    MAX_CHUNKS,
    MAX_TEXT_BYTES,
    MAX_TEXTS,
    Segments,
    scan_containers,
)
from aiscan.model.provenance.exif import read_exif
from aiscan.model.provenance.generators import GeneratorFacts, find_generator
from aiscan.model.provenance.xmp import read_xmp


def generator_of(data: bytes) -> GeneratorFacts | None:
    """What the whole metadata path finds in ``data`` (reader.py's order, without C2PA)."""
    segments = scan_containers(data)
    xmp = read_xmp(segments.xmp) if segments.xmp else None
    exif = read_exif(segments.exif) if segments.exif else {}
    return find_generator(segments.texts, exif, xmp)


# --- containers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tEXt", "zTXt", "iTXt"])
def test_png_text_chunks_of_each_kind(kind: TextKind) -> None:
    texts = {"parameters": "Steps: 20, Sampler: Euler", "Title": "café"}
    segments = scan_containers(png_with_text(texts, kind=kind))
    assert segments.mime == "image/png"
    assert segments.texts == texts
    assert (segments.xmp, segments.exif, segments.c2pa_bytes, segments.notes) == ([], None, 0, [])


def test_jpeg_exif_and_xmp_segments() -> None:
    segments = scan_containers(jpeg_with_exif(software="Draw Things", make="Apple"))
    assert segments.mime == "image/jpeg"
    assert segments.exif is not None and segments.exif[:4] == b"MM\x00*"
    assert read_exif(segments.exif) == {"Software": "Draw Things", "Make": "Apple"}
    packet = xmp_packet("trainedAlgorithmicMedia")
    assert scan_containers(jpeg_with_xmp(packet)).xmp == [packet.encode()]


def test_webp_exif_and_xmp_chunks() -> None:
    packet = xmp_packet("digitalCapture", "element")
    segments = scan_containers(webp_with_exif_xmp(exif_bytes(software="NovelAI"), packet))
    assert segments.mime == "image/webp"
    assert segments.xmp == [packet.encode()]
    assert segments.exif is not None and read_exif(segments.exif) == {"Software": "NovelAI"}


@pytest.mark.parametrize("size", [5000, 200_000])
def test_jpeg_app11_jumbf_sets_c2pa_bytes(size: int) -> None:
    segments = scan_containers(jpeg_with_segments(jumbf_app11(size)))
    assert segments.c2pa_bytes == size
    assert segments.notes == []


def test_png_cabx_and_webp_c2pa_chunks_set_c2pa_bytes() -> None:
    assert scan_containers(png_with_chunks([png_chunk(b"caBX", bytes(1234))])).c2pa_bytes == 1234
    webp = webp_with_exif_xmp(exif_bytes(software="x"))
    chunk = b"C2PA" + struct.pack("<I", 301) + bytes(301) + b"\x00"
    data = webp[:4] + struct.pack("<I", len(webp) - 8 + len(chunk)) + webp[8:] + chunk
    segments = scan_containers(data)
    assert segments.c2pa_bytes == 301
    assert segments.notes == []


def test_tiff_xmp_tag_and_exif() -> None:
    packet = xmp_packet("trainedAlgorithmicMedia").encode()
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "TIFF", tiffinfo={700: packet, 305: "ComfyUI"})
    segments = scan_containers(buf.getvalue())
    assert segments.mime == "image/tiff"
    assert segments.xmp == [packet]
    assert segments.exif is not None and read_exif(segments.exif)["Software"] == "ComfyUI"


def test_gif_xmp_is_found_by_the_bounded_search() -> None:
    buf = io.BytesIO()
    Image.new("P", (8, 8)).save(buf, "GIF")
    packet = xmp_packet("trainedAlgorithmicMedia").encode()
    gif = buf.getvalue()
    data = gif[:-1] + b"\x21\xff\x0bXMP DataXMP" + packet + b"\x00" + gif[-1:]
    segments = scan_containers(data)
    assert segments.mime == "image/gif"
    assert len(segments.xmp) == 1 and segments.xmp[0].startswith(b"<x:xmpmeta")
    assert read_xmp(segments.xmp).source_type == "trainedAlgorithmicMedia"


def test_heif_c2pa_uuid_box() -> None:
    ftyp = struct.pack(">I", 20) + b"ftypavif" + bytes(4) + b"mif1"
    store = bytes.fromhex("d8fec3d61b0e483c92975828877ec481") + bytes(500)
    uuid = struct.pack(">I", 8 + len(store)) + b"uuid" + store
    mdat = struct.pack(">I", 16) + b"mdat" + bytes(8)
    segments = scan_containers(ftyp + uuid + mdat)
    assert segments.mime == "image/avif"
    assert segments.c2pa_bytes == len(uuid)


def test_fifty_megabyte_text_chunk_is_cut_at_the_cap() -> None:
    size = 50 << 20
    data = png_with_chunks([png_chunk(b"tEXt", b"parameters\x00" + b"a" * size)])
    segments = scan_containers(data)
    assert len(segments.texts["parameters"]) == MAX_TEXT_BYTES
    assert segments.notes == [f"PNG tEXt chunk 'parameters' of {size} bytes cut to {MAX_TEXT_BYTES} bytes"]


def test_ztxt_zlib_bomb_stops_at_the_cap() -> None:
    packer = zlib.compressobj(9)
    block = b"a" * (1 << 20)
    bomb = b"".join(packer.compress(block) for _ in range(256)) + packer.flush()  # 256 MiB inflated
    assert len(bomb) < 1 << 20
    segments = scan_containers(png_with_chunks([png_chunk(b"zTXt", b"bomb\x00\x00" + bomb)]))
    assert len(segments.texts["bomb"]) == MAX_TEXT_BYTES
    assert segments.notes == [f"PNG zTXt chunk 'bomb' inflated cut to {MAX_TEXT_BYTES} bytes"]


def test_many_text_chunks_stop_at_the_count_cap() -> None:
    chunks = [png_chunk(b"tEXt", f"k{i}\x00v".encode()) for i in range(MAX_TEXTS + 36)]
    segments = scan_containers(png_with_chunks(chunks))
    assert len(segments.texts) == MAX_TEXTS
    assert segments.notes[-1].startswith("36 text chunks skipped")


def test_endless_chunk_list_stops_at_the_structure_cap() -> None:
    chunks = [png_chunk(b"zzZz", b"")] * (MAX_CHUNKS + 100) + [png_chunk(b"tEXt", b"late\x00v")]
    segments = scan_containers(png_with_chunks(chunks))
    assert "late" not in segments.texts
    assert segments.notes == [f"more than {MAX_CHUNKS} structures: the rest of the file was not walked"]


def test_truncated_png_keeps_what_came_before() -> None:
    data = a1111_png()
    cut = data[: data.index(b"IDAT") + 10]
    segments = scan_containers(cut)
    assert "parameters" in segments.texts
    assert segments.notes and "runs past the end" in segments.notes[0]


def test_truncated_jpeg_gives_a_note() -> None:
    data = jpeg_with_xmp(xmp_packet("trainedAlgorithmicMedia"))
    segments = scan_containers(data[:200])
    assert segments.xmp == []
    assert segments.notes and "runs past the end" in segments.notes[0]


@pytest.mark.parametrize(
    "prefix",
    [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x10\x00\x00WEBP", b"II*\x00", b"MM\x00*"],
)
def test_random_bytes_never_raise(prefix: bytes) -> None:
    rng = random.Random(len(prefix))
    for _ in range(20):
        data = prefix + rng.randbytes(rng.randrange(0, 5000))
        segments = scan_containers(data)
        assert isinstance(segments, Segments)
        if segments.exif:
            assert isinstance(read_exif(segments.exif), dict)
        find_generator(segments.texts, {}, read_xmp(segments.xmp) if segments.xmp else None)


def test_jpeg_fill_bytes_and_garbage_markers_stop_with_a_note() -> None:
    plain = jpeg_bytes()
    assert scan_containers(plain[:2] + b"\xff" * 1000 + plain[2:]).notes[0].startswith("JPEG fill bytes")
    app0_end = 4 + int.from_bytes(plain[4:6], "big")
    garbage = scan_containers(plain[:app0_end] + b"\x00garbage")
    assert garbage.notes == [f"JPEG marker expected at byte {app0_end}: rest not walked"]


def test_jpeg_comment_is_a_text() -> None:
    data = jpeg_with_segments([jpeg_segment(0xFE, b"made by hand")])
    assert scan_containers(data).texts == {"Comment": "made by hand"}


# --- EXIF ------------------------------------------------------------------------------------------


def test_exif_text_tags() -> None:
    data = exif_bytes(
        software="GIMP 2.10", make="Canon", model="EOS R5", artist="A. Person", description="harbour"
    )
    assert read_exif(data) == {
        "Software": "GIMP 2.10",
        "Make": "Canon",
        "Model": "EOS R5",
        "Artist": "A. Person",
        "ImageDescription": "harbour",
    }


@pytest.mark.parametrize("charset", ["ascii", "unicode-be", "unicode-le", "undefined"])
def test_user_comment_charsets(charset: Charset) -> None:
    text = "Steps: 20, Sampler: Euler a" if charset == "ascii" else "Steps: 20, Sampler: Euler a — ü"
    data = exif_bytes(user_comment=user_comment(text, charset))
    assert read_exif(data) == {"UserComment": text}


def test_exif_garbage_gives_notes_not_errors() -> None:
    assert read_exif(b"not a tiff at all") == {"note": "EXIF without a TIFF header"}
    assert read_exif(b"") == {}
    assert "outside the payload" in read_exif(b"MM\x00*\x7f\xff\xff\xff")["note"]
    truncated = exif_bytes(software="GIMP", make="Canon")[:-10]
    assert "note" in read_exif(truncated)


def test_exif_directory_entry_count_is_capped() -> None:
    data = b"II*\x00" + struct.pack("<IH", 8, 60000) + bytes(12 * 10)
    assert "first 512 read" in read_exif(data)["note"]


# --- generators ------------------------------------------------------------------------------------


def test_a1111_png() -> None:
    facts = generator_of(a1111_png(model="v1-5-pruned"))
    assert facts is not None
    assert facts.name == "Stable Diffusion web UI (v1-5-pruned)"
    assert facts.evidence["steps"] == "28"
    assert facts.evidence["seed"] == "1234567890"
    assert facts.evidence["sampler"] == "DPM++ 2M Karras"
    assert facts.evidence["prompt"] == "a lighthouse at dusk, highly detailed"


@pytest.mark.parametrize("charset", ["unicode-be", "unicode-le"])
def test_a1111_jpeg_user_comment(charset: Charset) -> None:
    comment = user_comment(a1111_parameters("dreamshaper_8"), charset)
    facts = generator_of(jpeg_with_exif(user_comment=comment))
    assert facts is not None
    assert facts.name == "Stable Diffusion web UI (dreamshaper_8)"
    assert facts.evidence["markers"] == ["exif UserComment: Steps/Sampler line"]


def test_fooocus_json_and_a1111_scheme() -> None:
    params = {"Prompt": "a boat", "Base Model": "juggernautXL_v8.safetensors", "Version": "Fooocus v2.5.0"}
    facts = generator_of(png_with_text({"parameters": json.dumps(params), "fooocus_scheme": "fooocus"}))
    assert facts is not None and facts.name == "Fooocus (juggernautXL_v8)"
    a1111 = a1111_parameters("juggernautXL_v8").replace("Version: v1.7.0", "Version: Fooocus v2.5.0")
    facts = generator_of(png_with_text({"parameters": a1111}))
    assert facts is not None and facts.name == "Fooocus (juggernautXL_v8)"


def test_comfyui_png_prompt_and_workflow() -> None:
    facts = generator_of(comfyui_png())
    assert facts is not None
    assert facts.name == "ComfyUI (sd_xl_base_1.0)"
    assert facts.evidence["markers"] == ["text prompt: node graph", "text workflow: workflow nodes"]
    assert facts.evidence["sampler"]["steps"] == 25
    assert facts.evidence["prompt"] == "a red fox in snow"


def test_comfyui_workflow_only_and_unet_loader() -> None:
    facts = generator_of(png_with_text({"workflow": json.dumps(comfyui_workflow("models/dreamshaper.ckpt"))}))
    assert facts is not None and facts.name == "ComfyUI (dreamshaper)"
    graph = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux1-dev.safetensors"}}}
    facts = generator_of(png_with_text({"prompt": json.dumps(graph)}))
    assert facts is not None and facts.name == "ComfyUI (flux1-dev)"


def test_comfyui_webp_exif() -> None:
    exif = exif_bytes(make="Prompt:" + json.dumps(comfyui_prompt("flux1-schnell.safetensors")))
    facts = generator_of(webp_with_exif_xmp(exif))
    assert facts is not None and facts.name == "ComfyUI (flux1-schnell)"
    assert facts.evidence["markers"] == ["exif Make: node graph"]


def test_invokeai_formats() -> None:
    meta = {"model": {"name": "juggernaut-xl-v9", "base": "sdxl"}, "seed": 7, "positive_prompt": "a dog"}
    facts = generator_of(png_with_text({"invokeai_metadata": json.dumps(meta)}))
    assert facts is not None and facts.name == "InvokeAI (juggernaut-xl-v9)"
    assert facts.evidence["seed"] == 7
    old = {"model_weights": "stable-diffusion-1.5", "image": {"prompt": "x", "steps": 50, "seed": 1}}
    facts = generator_of(png_with_text({"sd-metadata": json.dumps(old)}))
    assert facts is not None and facts.name == "InvokeAI (stable-diffusion-1.5)"
    facts = generator_of(png_with_text({"Dream": '"a castle" -s 50 -S 42 -W 512 -H 512'}))
    assert facts is not None and facts.name == "InvokeAI"


def test_novelai_png() -> None:
    texts = {
        "Software": "NovelAI",
        "Source": "NovelAI Diffusion V3 4BA8C6A6",
        "Comment": json.dumps({"steps": 28, "sampler": "k_euler", "seed": 99}),
        "Description": "1girl, sunset",
    }
    facts = generator_of(png_with_text(texts))
    assert facts is not None
    assert facts.name == "NovelAI (NovelAI Diffusion V3 4BA8C6A6)"
    assert (facts.evidence["steps"], facts.evidence["seed"]) == (28, 99)


def test_midjourney_description_and_xmp() -> None:
    job = "0a1b2c3d-1111-2222-3333-444455556666"
    texts = {"Description": f"a cat --ar 16:9 --v 6.0 Job ID: {job}", "Author": "u1"}
    facts = generator_of(png_with_text(texts))
    assert facts is not None and facts.name == "Midjourney"
    assert facts.evidence["job_id"] == job
    assert facts.evidence["flags"] == ["--ar 16:9", "--v 6.0"]
    assert facts.evidence["prompt"] == "a cat"
    facts = generator_of(jpeg_with_xmp(xmp_packet(None, description="a dog --niji 6")))
    assert facts is not None and facts.name == "Midjourney"
    assert facts.evidence["markers"] == ["xmp dc:description"]


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (jpeg_with_exif(software="Draw Things"), "Draw Things"),
        (jpeg_with_exif(software="NovelAI"), "NovelAI"),
        (jpeg_with_xmp(xmp_packet(None, creator_tool="Adobe Firefly 3")), "Adobe Firefly"),
        (png_with_text({"Software": "DALL·E 3"}), "DALL-E"),
    ],
)
def test_known_generator_names(data: bytes, name: str) -> None:
    facts = generator_of(data)
    assert facts is not None and facts.name == name


@pytest.mark.parametrize(
    "data",
    [
        jpeg_with_exif(make="Canon", model="EOS R5", software="Adobe Photoshop Lightroom Classic 13.0"),
        jpeg_with_xmp(xmp_packet("digitalCapture", creator_tool="Adobe Photoshop 25.0")),
        png_with_text({"prompt": "just a caption", "parameters": "made with love"}),
        png_with_text({"Description": "a photo of my -- favourite v 6 lens"}),
        # Many quotes and no seed switch: InvokeAI's Dream check must not backtrack over them.
        png_with_text({"Dream": '"' + '" ' * 30_000}),
    ],
)
def test_no_generator(data: bytes) -> None:
    assert generator_of(data) is None


def test_deeply_nested_json_is_a_note_not_a_crash() -> None:
    deep = "[" * 60_000
    assert generator_of(png_with_text({"prompt": deep, "workflow": deep})) is None
    facts = generator_of(png_with_text({"invokeai_metadata": deep}))
    assert facts is not None and facts.name == "InvokeAI"
    assert facts.evidence["notes"] == ["text invokeai_metadata: JSON nested too deeply, not read"]
