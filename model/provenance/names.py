"""Image generators recognised by name in a Software or CreatorTool field (README: "Recognised names")."""

from __future__ import annotations

import re

# (name shown in the `generator` column, pattern matched case-insensitively against the field's text).
KNOWN_GENERATORS: tuple[tuple[str, str], ...] = (
    ("NovelAI", r"novel\s?ai"),
    ("Midjourney", r"midjourney"),
    ("DALL-E", r"dall[\s·-]?e\b"),
    ("Adobe Firefly", r"firefly"),
    ("Stable Diffusion", r"stable[\s-]?diffusion|automatic1111"),
    ("ComfyUI", r"comfy\s?ui"),
    ("InvokeAI", r"invoke\s?ai"),
    ("Fooocus", r"fooocus"),
    ("Draw Things", r"draw\s?things"),
    ("Leonardo.Ai", r"leonardo\.?\s?ai"),
    ("Ideogram", r"ideogram"),
    ("Google Imagen", r"\bimagen\b"),
    ("Bing Image Creator", r"bing\s+image\s+creator"),
    ("NightCafe", r"nightcafe"),
    ("SwarmUI", r"swarm\s?ui"),
    ("Playground AI", r"playground\s?ai"),
)
_PATTERNS = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in KNOWN_GENERATORS)


def known_generator(text: str | None) -> str | None:
    """The known generator ``text`` names (looked for in its first 1000 characters), or None."""
    if not text:
        return None
    head = text[:1000]
    return next((name for name, pattern in _PATTERNS if pattern.search(head)), None)
