"""`aiscan model import --preprocess`: an imported model's views are declared once and used by scans."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from images import png_dir
from tinymodels import save_tiny_classifier


def test_imports_squash_unless_told_otherwise(tmp_path: Path, invoke: Callable[..., str]) -> None:
    save_tiny_classifier(tmp_path / "m.keras", 16, seed=1)
    png_dir(tmp_path / "images", 3, (40, 40), seed=2)

    invoke("model", "import", str(tmp_path / "m.keras"), "--name", "legacy")
    invoke(
        "model",
        "import",
        str(tmp_path / "m.keras"),
        "--name",
        "tiled",
        "--preprocess",
        "tiles",
        "--max-tiles",
        "4",
    )
    legacy = json.loads(invoke("model", "show", "legacy", "--json"))["meta"]["preprocess"]
    tiled = json.loads(invoke("model", "show", "tiled", "--json"))["meta"]["preprocess"]
    assert legacy["mode"] == "resize"
    assert (tiled["mode"], tiled["max_tiles"]) == ("tiles", 4)

    def rows(model: str) -> list[dict[str, object]]:
        summary = json.loads(invoke("scan", str(tmp_path / "images"), "--model", model, "--json"))
        return [
            json.loads(r) for r in invoke("report", str(summary["job_id"]), "--format", "jsonl").splitlines()
        ]

    # resize scores the whole image squashed; a 40-px image holds a 3x3 grid of 16-px tiles, thinned to 4.
    assert [(r["tiles"], r["tile_box"]) for r in rows("legacy")] == [(1, "0,0,40,40")] * 3
    assert [r["tiles"] for r in rows("tiled")] == [4] * 3
