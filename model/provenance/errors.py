"""Errors of provenance reading a user can act on."""

from __future__ import annotations

from aiscan.model.errors import ModelError


class TrustAnchorError(ModelError):
    """The C2PA trust anchors file is missing, unreadable or holds no PEM certificate."""
