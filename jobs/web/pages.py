"""The HTML pages (placeholder: the pages are written on their own branch and replace this module)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
