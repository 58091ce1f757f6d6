"""`aiscan report --format html`: one self-contained page after a real scan: a row per image with its
data-image-uri, inline JPEG thumbnails, no script, no external address, hostile file names as text."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import pytest
from images import jpeg_bytes, png_bytes
from PIL import Image

from aiscan.jobs.report_html import CSP, write_html_report
from aiscan.jobs.settings import get_settings
from aiscan.jobs.store.db import open_database

HOSTILE = "<img src=x onerror=alert(1)>.png"


class _Page(HTMLParser):
    """What the tests look at in a page: tags, attributes that load things, rows, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.rows: list[str] = []
        self.loads: list[str] = []
        self.images: list[str] = []
        self.csp: list[str] = []
        self.handlers: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "tr" and "data-image-uri" in values:
            self.rows.append(values["data-image-uri"] or "")
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data", "xlink:href"):
                self.loads.append(value or "")
            if name.startswith("on"):
                self.handlers.append(name)
        if tag == "img":
            self.images.append(values.get("src") or "")
        if tag == "meta" and values.get("http-equiv") == "Content-Security-Policy":
            self.csp.append(values.get("content") or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    root.mkdir()
    (root / "photo.jpg").write_bytes(jpeg_bytes(1, (300, 200)))
    (root / "render.png").write_bytes(png_bytes(2, (100, 140)))
    (root / HOSTILE).write_bytes(png_bytes(3, (90, 90)))
    (root / 'quote" and &amp;.jpg').write_bytes(jpeg_bytes(4, (80, 80)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    return root


def test_html_report_is_one_self_contained_page_with_a_row_per_image(
    home: Path, archive: Path, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    job_id = json.loads(invoke("scan", str(archive), "--json"))["job_id"]
    out = tmp_path / "report.html"
    invoke("report", str(job_id), "--format", "html", "-o", str(out))
    html = out.read_text(encoding="utf-8")
    page = _parse(html)

    names = {p.name for p in archive.iterdir()}
    assert sorted(Path(uri).name for uri in page.rows) == sorted(names)
    assert len(page.rows) == len(set(page.rows)) == 5
    # No script in any form, nothing that loads from elsewhere, and the page says so to the browser.
    assert "script" not in page.tags and not page.handlers
    assert page.csp == [CSP] and "default-src 'none'" in CSP
    assert all(value.startswith("data:image/jpeg;base64,") for value in page.loads), page.loads
    assert "http://" not in html and "https://" not in html
    # One thumbnail per decoded image, each a JPEG no larger than 96 pixels a side.
    assert len(page.images) == 4
    for src in page.images:
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            assert im.format == "JPEG" and max(im.size) <= 96
    # The hostile name is text: escaped in the markup, intact once parsed.
    assert HOSTILE in "".join(page.text) and any(uri.endswith("/" + HOSTILE) for uri in page.rows)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert any(uri.endswith('/quote" and &amp;.jpg') for uri in page.rows)
    # The summary, verdict counts and the inline histogram come before the rows.
    assert f"job {job_id}" in html and "tiny:1" in html and str(archive) in html
    assert 'data-verdict="error"' in html
    assert html.index("<svg") < html.index("<tbody>") and html.count("<rect") == 20


def test_html_report_streams_to_standard_output_and_in_small_batches(
    home: Path, archive: Path, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    job_id = json.loads(invoke("scan", str(archive), "--json"))["job_id"]
    out = tmp_path / "report.html"
    invoke("report", str(job_id), "--format", "html", "-o", str(out))
    printed = invoke("report", str(job_id), "--format", "html", "-o", "-")
    assert printed.strip() == out.read_text(encoding="utf-8").strip()
    # Batches of two rows (several round trips) give the same page as one batch.
    buffer = io.StringIO()
    with open_database(get_settings().database_url).session() as s:
        assert write_html_report(s, job_id, buffer, batch=2) == 5
    assert buffer.getvalue().strip() == printed.strip()


def test_html_report_of_a_job_with_no_rows_and_of_a_missing_job(
    home: Path, tmp_path: Path, invoke: Callable[..., str]
) -> None:
    from click.testing import CliRunner

    from aiscan.jobs.cli import cli

    empty = tmp_path / "empty"
    empty.mkdir()
    job_id = json.loads(invoke("scan", str(empty), "--json"))["job_id"]
    page = _parse(invoke("report", str(job_id), "--format", "html"))
    assert page.rows == [] and "no images" in "".join(page.text)
    result = CliRunner().invoke(cli, ["report", "999", "--format", "html", "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 1 and "no job 999" in str(result.exception)
    assert not (tmp_path / "x.html").exists()
