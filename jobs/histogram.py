"""The SVG geometry of a job's p-score histogram, drawn by the job page and the HTML report alike."""

from __future__ import annotations

from dataclasses import dataclass


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
