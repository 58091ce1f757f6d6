"""The IPTC digital source type vocabulary, and which of its terms declare an AI or a capture source.

Terms come as URIs (``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia``) or
short forms; rows keep the short form. Vocabulary: https://cv.iptc.org/newscodes/digitalsourcetype/
"""

from __future__ import annotations

from enum import StrEnum

IPTC_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"

# Made by a model trained on sampled content, whole or in part: what "AI-generated" means to an auditor.
# algorithmicMedia (made by an algorithm with no training data) and compositeSynthetic do not count:
# neither names a trained generator.
AI_TERMS = frozenset({"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia"})
# Sampled from real life by a camera or scanner. Only a C2PA manifest that is not invalid may declare
# it: unsigned metadata saying "camera" is trivial to forge.
CAPTURE_TERMS = frozenset({"digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm"})


class Declared(StrEnum):
    """What provenance declares about an image's source."""

    AI = "ai"
    CAPTURE = "capture"


def short_term(value: str) -> str:
    """A source type's short form: the last path segment of an IPTC URI, or the text itself, stripped."""
    text = value.strip()
    for prefix in (IPTC_PREFIX, IPTC_PREFIX.replace("http://", "https://")):
        if text.startswith(prefix):
            return text[len(prefix) :].strip("/")
    return text


def declares(term: str | None) -> Declared | None:
    """What one IPTC term declares (None for terms that declare neither, and for no term)."""
    if not term:
        return None
    short = short_term(term)
    if short in AI_TERMS:
        return Declared.AI
    if short in CAPTURE_TERMS:
        return Declared.CAPTURE
    return None
