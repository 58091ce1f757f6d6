"""What provenance reading gives a result row, the evidence's size bounds, and the verdict rule."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from aiscan.model.provenance.vocabulary import Declared

# Evidence is stored with every row and shown in reports: each string, list and nesting level is cut,
# and the whole JSON text stays under MAX_EVIDENCE_CHARS.
MAX_TEXT = 300
MAX_ITEMS = 16
MAX_DEPTH = 4
MAX_EVIDENCE_CHARS = 8192
# Control characters other than tab and newline (NUL included) are dropped: no database or terminal
# chokes on evidence.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Kind(StrEnum):
    """The ``provenance`` column: the strongest signal present, in this order."""

    C2PA = "c2pa"
    IPTC = "iptc"
    METADATA = "metadata"
    WATERMARK = "watermark"
    NONE = "none"


class C2paState(StrEnum):
    """A C2PA manifest store's trust state (the ``c2pa_state`` column; empty without a manifest)."""

    TRUSTED = "trusted"
    UNTRUSTED = "untrusted"
    INVALID = "invalid"


class Verdict(StrEnum):
    """What a report leads with. The model's labels (real, fake, uncertain) are verdicts too."""

    AI_DECLARED = "ai_declared"
    CAPTURE_DECLARED = "capture_declared"
    ERROR = "error"


@dataclass(frozen=True)
class Provenance:
    """What an image declares about its origin: the result row's provenance columns."""

    kind: Kind = Kind.NONE
    generator: str | None = None
    source_type: str | None = None
    c2pa_state: C2paState | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    declared: Declared | None = None


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` without control characters, cut to ``limit`` characters (an ellipsis marks a cut)."""
    text = _CONTROL.sub("", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {clean_text(str(k), 64): _bounded(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more"
        return out
    if isinstance(value, list | tuple):
        seq = [_bounded(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            seq.append(f"… {len(value) - MAX_ITEMS} more")
        return seq
    return clean_text(repr(value))


def bound_evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    """``evidence`` cut to the size bounds; JSON-ready."""
    bounded = _bounded(evidence, 0)
    if len(json.dumps(bounded)) <= MAX_EVIDENCE_CHARS:
        return bounded
    # Drop the largest entries until it fits, naming what was dropped.
    dropped = []
    for key in sorted(bounded, key=lambda k: len(json.dumps(bounded[k])), reverse=True):
        dropped.append(key)
        del bounded[key]
        if len(json.dumps(bounded)) + 64 * len(dropped) <= MAX_EVIDENCE_CHARS:
            break
    bounded["dropped"] = [clean_text(k, 60) for k in dropped]
    return bounded


def verdict(declared: Declared | None, label: str | None, error_kind: str | None) -> str:
    """The row's verdict: a declaration first, then the model's label, or ``error`` without one."""
    if declared is Declared.AI:
        return Verdict.AI_DECLARED
    if declared is Declared.CAPTURE:
        return Verdict.CAPTURE_DECLARED
    if error_kind is not None or label is None:
        return Verdict.ERROR
    return label
