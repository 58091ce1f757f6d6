"""What the pages draw from a result: evidence as readable lines and the tile box."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Evidence is bounded when stored (model.provenance.evidence); these only keep the page readable.
MAX_EVIDENCE_LINES = 60
MAX_VALUE_CHARS = 300


def evidence_items(evidence: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested evidence flattened to ("c2pa.signer.issuer", "text") pairs, in the order it was recorded."""
    items: list[tuple[str, str]] = []
    _flatten(evidence, prefix, items)
    return items[:MAX_EVIDENCE_LINES]


def _flatten(value: Any, key: str, out: list[tuple[str, str]]) -> None:
    if isinstance(value, dict):
        for name, inner in value.items():
            _flatten(inner, f"{key}.{name}" if key else str(name), out)
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, inner in enumerate(value):
            _flatten(inner, f"{key}[{i}]", out)
    elif value is not None and value != [] and value != "":
        text = ", ".join(map(str, value)) if isinstance(value, list) else _scalar(value)
        if len(text) > MAX_VALUE_CHARS:
            text = text[: MAX_VALUE_CHARS - 1] + "…"
        out.append((key or "evidence", text))


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    return json.dumps(value) if not isinstance(value, int | float) else str(value)


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int


def tile_rect(result: dict[str, Any]) -> Box | None:
    """The most fake tile as a box in image pixels, or None when the model did not tile or the box is odd."""
    text, width, height = result.get("tile_box"), result.get("width"), result.get("height")
    if not text or not width or not height:
        return None
    try:
        x, y, w, h = (int(part) for part in str(text).split(","))
    except ValueError:
        return None
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
        return None
    return Box(x, y, w, h)
