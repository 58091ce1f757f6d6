"""XMP: IPTC source type in every form, creator tool, remote manifest; XML bombs and external entities."""

from __future__ import annotations

from pathlib import Path

import pytest
from metadata_images import Form, jpeg_with_xmp, png_with_text, xmp_packet

from aiscan.model.provenance.containers import MAX_XMP_BYTES, scan_containers
from aiscan.model.provenance.xmp import MAX_PACKET_BYTES, read_xmp


@pytest.mark.parametrize("form", ["attribute", "element", "resource"])
def test_source_type_in_each_form_from_a_jpeg(form: Form) -> None:
    segments = scan_containers(jpeg_with_xmp(xmp_packet("trainedAlgorithmicMedia", form=form)))
    facts = read_xmp(segments.xmp)
    assert facts.source_type == "trainedAlgorithmicMedia"
    assert facts.evidence["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert facts.notes == []


def test_creator_tool_remote_manifest_and_hints() -> None:
    packet = xmp_packet(
        "compositeWithTrainedAlgorithmicMedia",
        creator_tool="Adobe Firefly",
        provenance="https://example.invalid/manifest.c2pa",
        description="made with Midjourney",
    )
    facts = read_xmp([packet.encode()])
    assert facts.source_type == "compositeWithTrainedAlgorithmicMedia"
    assert facts.creator_tool == "Adobe Firefly"
    assert facts.remote_manifest == "https://example.invalid/manifest.c2pa"
    assert facts.description == "made with Midjourney"
    assert facts.evidence["ai_hints"] == {"creator_tool": "Adobe Firefly", "description": "Midjourney"}


def test_png_itxt_xmp_packet_is_found() -> None:
    data = png_with_text({"XML:com.adobe.xmp": xmp_packet("digitalCapture", "element")}, kind="iTXt")
    segments = scan_containers(data)
    assert "XML:com.adobe.xmp" not in segments.texts
    assert read_xmp(segments.xmp).source_type == "digitalCapture"


def test_packet_without_provenance_gives_empty_facts() -> None:
    facts = read_xmp([xmp_packet(None, creator_tool="Adobe Photoshop 25.0").encode()])
    assert facts.source_type is None
    assert facts.creator_tool == "Adobe Photoshop 25.0"
    assert "ai_hints" not in facts.evidence


def test_first_packet_naming_a_field_wins() -> None:
    first = xmp_packet(None, creator_tool="GIMP").encode()
    second = xmp_packet("trainedAlgorithmicMedia", creator_tool="Other").encode()
    facts = read_xmp([first, second])
    assert facts.creator_tool == "GIMP"
    assert facts.source_type == "trainedAlgorithmicMedia"


_ENTITIES = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
BILLION_LAUGHS = (
    f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(_ENTITIES)}]>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="&lol9;"/>'
    "</rdf:RDF></x:xmpmeta>"
)


def test_billion_laughs_is_refused_with_a_note() -> None:
    segments = scan_containers(jpeg_with_xmp(BILLION_LAUGHS))
    facts = read_xmp(segments.xmp)
    assert facts.creator_tool is None
    assert facts.notes == ["XMP packet 1 refused: DTDForbidden (DTDs and entities are not read)"]


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    packet = (
        f'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY ext SYSTEM "file://{secret}">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/"><xmp:CreatorTool>&ext;</xmp:CreatorTool>'
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )
    facts = read_xmp([scan_containers(jpeg_with_xmp(packet)).xmp[0]])
    assert facts.creator_tool is None
    assert "TOP-SECRET" not in repr(facts)
    assert "refused" in facts.notes[0]


def test_malformed_packet_gives_a_note() -> None:
    facts = read_xmp([b"<x:xmpmeta><unclosed>", xmp_packet("trainedAlgorithmicMedia").encode()])
    assert facts.source_type == "trainedAlgorithmicMedia"
    assert facts.notes and "not well-formed" in facts.notes[0]


def test_enormous_packet_is_skipped_by_the_cap() -> None:
    filler = "<rdf:Description>" + "x" * (MAX_PACKET_BYTES + 10) + "</rdf:Description>"
    packet = xmp_packet("trainedAlgorithmicMedia").replace("</rdf:RDF>", filler + "</rdf:RDF>")
    assert read_xmp([packet.encode()]).notes[0].startswith("XMP packet 1 of")
    # In a PNG the container cap stops it before any parsing.
    segments = scan_containers(png_with_text({"XML:com.adobe.xmp": packet}, kind="iTXt"))
    assert segments.xmp == []
    assert any(str(MAX_XMP_BYTES) in note for note in segments.notes)


def test_deeply_nested_packet_is_read_without_recursion() -> None:
    depth = 100_000
    packet = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">' + "<a>" * depth + "</a>" * depth + "</x:xmpmeta>"
    ).encode()
    facts = read_xmp([packet])
    assert facts.source_type is None
    assert any("elements" in note for note in facts.notes)
