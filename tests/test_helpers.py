"""The helpers other tests lean on: the in-process CLI fixture and the image makers."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from images import jpeg_bytes, png_bytes, png_dir
from PIL import Image


def test_invoke_gives_the_output_and_fails_with_it(invoke: Callable[..., str], aiscan_home: Path) -> None:
    assert "scan" in invoke("--help")
    with pytest.raises(AssertionError, match="No such command 'nosuchcommand'"):
        invoke("nosuchcommand")
    invoke("jobs", "list")
    assert aiscan_home.is_dir(), "the CLI must run under the test's AISCAN_HOME"


def test_images_have_the_format_and_size_asked_for(tmp_path: Path) -> None:
    jpeg = jpeg_bytes(3, (80, 60))
    with Image.open(io.BytesIO(jpeg)) as im:
        assert (im.format, im.size) == ("JPEG", (80, 60))
    assert jpeg_bytes(np.random.default_rng(3), (80, 60)) == jpeg != jpeg_bytes(4, (80, 60))
    with Image.open(io.BytesIO(png_bytes(5))) as im:
        assert (im.format, im.size) == ("PNG", (160, 160))

    paths = png_dir(tmp_path / "d", 3, (30, 20), seed=1)
    assert [p.name for p in paths] == ["g0.png", "g1.png", "g2.png"]
    assert len({p.read_bytes() for p in paths}) == 3
    for path in paths:
        with Image.open(path) as im:
            assert (im.format, im.size) == ("PNG", (30, 20))
