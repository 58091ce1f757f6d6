"""IPTC digital source type, creator tool and remote manifest address from XMP packets.

Parsed with defusedxml with DTDs forbidden: no entity expansion, no external reads.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from aiscan.model.provenance.names import known_generator
from aiscan.model.provenance.vocabulary import short_term

MAX_PACKET_BYTES = 1 << 20
MAX_PACKETS = 4
MAX_ELEMENTS = 20_000  # per packet
MAX_VALUE_CHARS = 64 << 10

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
IPTC_EXT = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
XMP = "http://ns.adobe.com/xap/1.0/"
DC = "http://purl.org/dc/elements/1.1/"
DCTERMS = "http://purl.org/dc/terms/"
ST_EVT = "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"

SOURCE_TYPE = f"{{{IPTC_EXT}}}DigitalSourceType"
CREATOR_TOOL = f"{{{XMP}}}CreatorTool"
PROVENANCE = f"{{{DCTERMS}}}provenance"
DESCRIPTION = f"{{{DC}}}description"
SOFTWARE_AGENT = f"{{{ST_EVT}}}softwareAgent"
# IPTC's properties for generated images, recorded as evidence when present.
AI_FIELDS = {
    f"{{{IPTC_EXT}}}{name}": name
    for name in ("AISystemUsed", "AISystemVersionUsed", "AIPromptInformation", "AIPromptWriterName")
}
_WANTED = {SOURCE_TYPE, CREATOR_TOOL, PROVENANCE, DESCRIPTION, SOFTWARE_AGENT, *AI_FIELDS}


@dataclass(frozen=True)
class XmpFacts:
    """What the XMP packets of one image say about its origin."""

    source_type: str | None = None
    creator_tool: str | None = None
    remote_manifest: str | None = None  # recorded, never fetched
    evidence: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    description: str | None = None  # dc:description, for generators that write their parameters there


def read_xmp(packets: list[bytes]) -> XmpFacts:
    """The facts of ``packets``, the first packet naming a field winning; damage gives notes, not errors."""
    values: dict[str, str] = {}
    agents: list[str] = []
    notes: list[str] = []
    if len(packets) > MAX_PACKETS:
        notes.append(f"{len(packets)} XMP packets: first {MAX_PACKETS} read")
    for index, packet in enumerate(packets[:MAX_PACKETS], start=1):
        if len(packet) > MAX_PACKET_BYTES:
            notes.append(f"XMP packet {index} of {len(packet)} bytes skipped: over {MAX_PACKET_BYTES}")
            continue
        try:
            root = fromstring(packet, forbid_dtd=True)
        except DefusedXmlException as exc:
            notes.append(f"XMP packet {index} refused: {type(exc).__name__} (DTDs and entities are not read)")
            continue
        except (ET.ParseError, ValueError) as exc:
            notes.append(f"XMP packet {index} is not well-formed XML: {exc}"[:200])
            continue
        _collect(root, values, agents, notes, index)

    source_type = values.get(SOURCE_TYPE)
    creator_tool = values.get(CREATOR_TOOL)
    remote = values.get(PROVENANCE)
    description = values.get(DESCRIPTION)
    evidence: dict[str, Any] = {}
    if source_type:
        evidence["digital_source_type"] = source_type
    if creator_tool:
        evidence["creator_tool"] = creator_tool
    if remote:
        evidence["remote_manifest"] = remote
    for tag, field_name in AI_FIELDS.items():
        if tag in values:
            evidence[field_name] = values[tag]
    hints = {
        where: name
        for where, text in (("creator_tool", creator_tool), ("description", description))
        if (name := known_generator(text))
    }
    hints.update(
        {f"software_agent {i}": name for i, agent in enumerate(agents) if (name := known_generator(agent))}
    )
    if hints:
        evidence["ai_hints"] = hints
    return XmpFacts(
        source_type=short_term(source_type) if source_type else None,
        creator_tool=creator_tool,
        remote_manifest=remote,
        evidence=evidence,
        notes=notes,
        description=description,
    )


def _collect(
    root: ET.Element, values: dict[str, str], agents: list[str], notes: list[str], index: int
) -> None:
    """Fields of one parsed packet, as attributes (short form) or elements (text, rdf:resource, rdf:li)."""
    elements = itertools.islice(root.iter(), MAX_ELEMENTS + 1)
    for count, element in enumerate(elements):
        if count == MAX_ELEMENTS:
            notes.append(f"XMP packet {index} has over {MAX_ELEMENTS} elements: the rest not read")
            return
        for name, text in element.attrib.items():
            if name in _WANTED:
                _keep(name, text, values, agents)
        if element.tag in _WANTED:
            value = _value(element)
            if value:
                _keep(element.tag, value, values, agents)


def _keep(name: str, text: str, values: dict[str, str], agents: list[str]) -> None:
    text = text.strip()[:MAX_VALUE_CHARS]
    if not text:
        return
    if name == SOFTWARE_AGENT:
        if len(agents) < 16:
            agents.append(text)
    else:
        values.setdefault(name, text)


def _value(element: ET.Element) -> str | None:
    """An element property's value: its rdf:resource, its text, or its first rdf:li/rdf:value text."""
    resource = element.get(f"{{{RDF}}}resource")
    if resource:
        return resource
    for inner in itertools.islice(element.iter(), 64):
        if inner.text and inner.text.strip():
            return inner.text
        inner_resource = inner.get(f"{{{RDF}}}resource")
        if inner_resource:
            return inner_resource
    return None
