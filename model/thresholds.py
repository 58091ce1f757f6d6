"""A model's decision threshold and uncertain band: p_real -> "real", "fake" or "uncertain"."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiscan.model.errors import ModelError


@dataclass
class Thresholds:
    """Decision threshold and the uncertain band [uncertain_low, uncertain_high] around it."""

    decision: float = 0.5
    uncertain_low: float = 0.4
    uncertain_high: float = 0.6

    def __post_init__(self) -> None:
        values = (self.uncertain_low, self.decision, self.uncertain_high)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
            raise ModelError(f"thresholds must be finite numbers: {values}")
        if not 0.0 <= self.uncertain_low <= self.decision <= self.uncertain_high <= 1.0:
            raise ModelError(
                "thresholds must satisfy 0 <= uncertain_low <= decision <= uncertain_high <= 1, got "
                f"low={self.uncertain_low} decision={self.decision} high={self.uncertain_high}"
            )

    def label(self, p_real: float) -> str:
        """Return "fake" below uncertain_low, "real" above uncertain_high, "uncertain" in between."""
        if not math.isfinite(p_real):
            raise ModelError(f"p_real is not a number: {p_real}")
        if p_real < self.uncertain_low:
            return "fake"
        if p_real > self.uncertain_high:
            return "real"
        return "uncertain"

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Thresholds:
        known = {f.name for f in fields(cls)}
        return cls(**{k: float(v) for k, v in data.items() if k in known})
