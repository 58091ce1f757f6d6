"""What the pages draw from a result: evidence as readable lines, the tile box, the histogram's bars."""

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


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    w: float
    h: float
    lo: str
    hi: str
    count: int
    cls: str


@dataclass(frozen=True)
class Histogram:
    width: int
    height: int
    base: int
    bars: list[Bar]
    peak: int
    total: int


def histogram_layout(counts: list[int], width: int = 400, height: int = 130) -> Histogram:
    """SVG geometry of a p-score histogram: one bar per bin of [0, 1], coloured by the end it leans to."""
    base = height - 16  # room for the axis labels
    peak = max(counts, default=0)
    n = max(len(counts), 1)
    step = width / n
    bars = []
    for i, count in enumerate(counts):
        h = (base - 14) * count / peak if peak else 0.0
        centre = (i + 0.5) / n
        cls = "lo" if centre < 0.35 else "hi" if centre > 0.65 else "mid"
        bars.append(
            Bar(
                x=round(i * step + 1, 2),
                y=round(base - h, 2),
                w=round(step - 2, 2),
                h=round(h, 2),
                lo=f"{i / n:.2f}",
                hi=f"{(i + 1) / n:.2f}",
                count=count,
                cls=cls,
            )
        )
    return Histogram(width, height, base, bars, peak, sum(counts))
