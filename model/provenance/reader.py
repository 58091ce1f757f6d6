"""One image's bytes -> its :class:`Provenance`: every signal read, the strongest one named, all of it
in the evidence. Hostile metadata costs bounded time and memory and never the image's score."""

from __future__ import annotations

from typing import Any

from aiscan.model.provenance.c2pa_read import C2paFacts, TrustAnchors, read_c2pa
from aiscan.model.provenance.containers import MAX_MANIFEST_BYTES, Segments, scan_containers
from aiscan.model.provenance.evidence import C2paState, Kind, Provenance, bound_evidence, clean_text
from aiscan.model.provenance.exif import read_exif
from aiscan.model.provenance.generators import find_generator
from aiscan.model.provenance.vocabulary import Declared, declares
from aiscan.model.provenance.xmp import XmpFacts, read_xmp


def read_provenance(data: bytes, trust: TrustAnchors | None = None) -> Provenance:
    """What ``data`` declares about its origin; offline (remote manifests are never fetched)."""
    evidence: dict[str, Any] = {}
    errors: list[str] = []

    def guarded(step: str, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except Exception as exc:  # one malformed signal is evidence, never the end of the others
            errors.append(f"{step}: {type(exc).__name__}: {clean_text(str(exc), 200)}")
            return None

    segments: Segments | None = guarded("containers", scan_containers, data)
    if segments is None:
        return Provenance(evidence=bound_evidence({"errors": errors}))
    errors.extend(segments.notes)
    xmp: XmpFacts | None = guarded("xmp", read_xmp, segments.xmp) if segments.xmp else None
    exif: dict[str, str] = (guarded("exif", read_exif, segments.exif) if segments.exif else None) or {}
    if "note" in exif:
        errors.append("exif: " + exif["note"])
    c2pa = _c2pa(data, segments, trust, guarded, errors)
    generator = guarded("metadata", find_generator, segments.texts, exif, xmp)

    if exif:
        evidence["exif"] = exif
    if xmp is not None:
        evidence["xmp"] = xmp.evidence
        errors.extend(xmp.notes)
    if generator is not None:
        evidence["metadata"] = generator.evidence
    if c2pa is not None:
        evidence["c2pa"] = c2pa.evidence
    if errors:
        evidence["errors"] = errors

    declared, source_type, name = None, None, None
    valid_c2pa = c2pa is not None and c2pa.state is not C2paState.INVALID
    if valid_c2pa and c2pa is not None:
        declared = _strongest(c2pa.source_types)
        # The term behind the verdict: an AI edit's, not the capture it edited.
        source_type = next((t for t in c2pa.source_types if declares(t) is declared), None) or next(
            iter(c2pa.source_types), None
        )
        name = c2pa.generator
    if declared is None and xmp is not None and declares(xmp.source_type) is Declared.AI:
        # Unsigned metadata may declare AI, never a capture.
        declared, source_type = Declared.AI, xmp.source_type
    if source_type is None and xmp is not None:
        source_type = xmp.source_type
    if generator is not None:
        name = name or generator.name
        declared = declared or Declared.AI

    if c2pa is not None:
        kind = Kind.C2PA
    elif xmp is not None and xmp.source_type:
        kind = Kind.IPTC
    elif generator is not None:
        kind = Kind.METADATA
    else:
        kind = Kind.NONE
    return Provenance(
        kind=kind,
        generator=clean_text(name, 200) if name else None,
        source_type=clean_text(source_type, 100) if source_type else None,
        c2pa_state=c2pa.state if c2pa is not None else None,
        evidence=bound_evidence(evidence),
        declared=declared,
    )


def _c2pa(
    data: bytes, segments: Segments, trust: TrustAnchors | None, guarded: Any, errors: list[str]
) -> C2paFacts | None:
    """The embedded manifest store's facts; an oversized or unreadable store is ``invalid``."""
    if not segments.c2pa_bytes:
        return None
    if segments.c2pa_bytes > MAX_MANIFEST_BYTES:
        note = f"manifest store of {segments.c2pa_bytes} bytes is over {MAX_MANIFEST_BYTES}: not validated"
        return C2paFacts(C2paState.INVALID, evidence={"error": note})
    before = len(errors)
    facts: C2paFacts | None = guarded("c2pa", read_c2pa, data, segments.mime, trust)
    if facts is None:
        note = errors[-1] if len(errors) > before else "c2pa found no manifest store in the C2PA segments"
        return C2paFacts(C2paState.INVALID, evidence={"error": note})
    return facts


def _strongest(terms: list[str]) -> Declared | None:
    """AI over capture: a captured photograph later edited with a generator is AI-edited."""
    found = {declares(term) for term in terms}
    if Declared.AI in found:
        return Declared.AI
    if Declared.CAPTURE in found:
        return Declared.CAPTURE
    return None
