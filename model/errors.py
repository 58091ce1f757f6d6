"""Typed errors of the model package; each carries an ``error_kind`` stored on result rows."""

from __future__ import annotations


class ModelError(Exception):
    """A problem with a model file or its conventions that a user can act on."""


class DecodeError(Exception):
    """An image that cannot be decoded; ``error_kind`` names the failure for result rows."""

    error_kind = "decode_error"


class NotAnImage(DecodeError):
    error_kind = "not_an_image"


class Truncated(DecodeError):
    error_kind = "truncated"


class TooLarge(DecodeError):
    error_kind = "too_large"


class Unsupported(DecodeError):
    error_kind = "unsupported"
