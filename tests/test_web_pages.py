"""The HTML pages in real headless Chromium (Debian's, driven by Playwright) against a real uvicorn server.

One module-wide site: a tiny tiled model as the default, one scanned folder (camera-like and generator-like
images, a generator-declared PNG, a file that is not an image and one with a hostile name). Every browser
request to anything but the test server is blocked and recorded; each test asserts none was attempted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from images import encode, jpeg_bytes, png_bytes
from metadata_images import a1111_parameters, a1111_png
from PIL import PngImagePlugin
from playwright.sync_api import Browser, Dialog, Locator, Page, Route, expect, sync_playwright
from tinymodels import save_tiny_classifier
from webserver import serve

from aiscan.training.synth import generator_like
from bench.services import ensure_chromium

HOSTILE = "<img src=x onerror=alert(1)>.png"
SHOTS = Path(__file__).parent / "screenshots-out"
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGE_SIZE = 4


@dataclass
class Site:
    url: str
    job_id: int
    images: Path
    names: set[str]  # image_uri of every image of the scanned folder


@dataclass
class Watch:
    """What a page did: requests it tried outside the server, dialogs it opened, console lines."""

    external: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


def _cli(*args: str) -> str:
    from aiscan.jobs.cli import cli

    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _folder(root: Path) -> Path:
    root.mkdir()
    for i in range(4):
        (root / f"camera-{i}.jpg").write_bytes(jpeg_bytes(i, (200, 150)))
    for i in range(3):
        (root / f"generated-{i}.png").write_bytes(png_bytes(10 + i, (160, 120)))
    (root / "declared-sd.png").write_bytes(a1111_png(size=(120, 80)))
    (root / HOSTILE).write_bytes(png_bytes(20, (80, 80)))
    (root / "broken.jpg").write_bytes(b"this is not an image")
    return root


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from aiscan.jobs.settings import get_settings
    from aiscan.jobs.store.db import open_database
    from aiscan.jobs.summary import recent_job_summaries

    tmp = tmp_path_factory.mktemp("web-pages")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AISCAN_HOME", str(tmp / "home"))
        for var in ("AISCAN_DATABASE_URL", "AISCAN_BROKER_URL", "AISCAN_CHUNK_SIZE", "AISCAN_BATCH_SIZE"):
            mp.delenv(var, raising=False)
        mp.setenv("AISCAN_URL_ALLOW_NETWORKS", "127.0.0.0/8")
        mp.setenv("AISCAN_URL_RETRIES", "0")
        get_settings.cache_clear()
        open_database.cache_clear()
        save_tiny_classifier(tmp / "m.keras", 40, seed=4)
        _cli("model", "import", str(tmp / "m.keras"), "--name", "tiny", "--preprocess", "tiles")
        images = _folder(tmp / "archive")
        _cli("scan", str(images))
        settings = get_settings()
        with open_database(settings.database_url).session() as s:
            job_id = recent_job_summaries(s, 1)[0]["job_id"]
        with serve(settings) as url:
            names = {str(path.resolve()) for path in images.iterdir()}
            yield Site(url, job_id, images, names)
        get_settings.cache_clear()
        open_database.cache_clear()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = ensure_chromium()
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


def _open(browser: Browser, site_url: str | None, scheme: str = "light") -> tuple[Page, Watch]:
    """A fresh page whose requests may reach ``site_url`` only (None: no network at all)."""
    watch = Watch()
    context = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 900})  # type: ignore[arg-type]

    def guard(route: Route) -> None:
        url = route.request.url
        allowed = url.startswith("file://") if site_url is None else url.startswith(site_url + "/")
        if allowed:
            route.continue_()
        else:
            watch.external.append(url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()

    def dialog(d: Dialog) -> None:
        watch.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.on("console", lambda m: watch.console.append(f"{m.type}: {m.text}"))
    return page, watch


def _clean(watch: Watch) -> None:
    """No request left the test server, no dialog opened, and nothing (a CSP refusal) logged an error.

    Pages answered with an error status on purpose (400, 404) log "Failed to load resource": not counted.
    """
    assert watch.external == [] and watch.dialogs == []
    errors = [line for line in watch.console if line.startswith("error")]
    assert [line for line in errors if "the server responded with a status of" not in line] == []


def _shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    # Lazy thumbnails below the window would be blank in a full-page shot: load them all first.
    page.eval_on_selector_all("img[loading=lazy]", "imgs => imgs.forEach(i => i.loading = 'eager')")
    page.evaluate(
        "Promise.all([...document.images].map("
        "i => i.complete ? 0 : new Promise(r => { i.onload = i.onerror = r; })))"
    )
    page.screenshot(path=str(SHOTS / name), full_page=True)


def _rows(page: Page) -> list[str]:
    return page.eval_on_selector_all("[data-image-uri]", "rows => rows.map(r => r.dataset.imageUri)")


def _result(page: Page) -> Locator:
    """The check page's result element, once it is there."""
    result = page.locator("[data-p-real]")
    result.wait_for()
    return result


def _api_check(site: Site, data: bytes, name: str = "x.jpg") -> dict[str, Any]:
    response = httpx.post(f"{site.url}/api/v1/classify", files={"file": (name, data)}, timeout=60)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def test_check_an_uploaded_image_shows_the_api_score(site: Site, browser: Browser, tmp_path: Path) -> None:
    data = jpeg_bytes(7, (320, 240))
    upload = tmp_path / "holiday.jpg"
    upload.write_bytes(data)
    expected = _api_check(site, data)
    for scheme in ("light", "dark"):
        page, watch = _open(browser, site.url, scheme)
        page.goto(site.url + "/")
        page.set_input_files("input[name=file]", str(upload))
        page.click("button[type=submit]")
        result = _result(page)
        score = float(result.get_attribute("data-p-real") or "nan")
        assert 0.0 <= score <= 1.0
        assert score == expected["p_real"]
        assert result.get_attribute("data-verdict") == expected["verdict"]
        # The image is shown from the uploaded bytes, and the tiled model's worst tile is outlined on it.
        src = page.get_attribute(".figure img", "src") or ""
        assert src.startswith("data:image/jpeg;base64,")
        assert page.is_visible(".figure svg.overlay rect.tile")
        box = [page.get_attribute(".figure svg.overlay rect.tile", a) for a in ("x", "y", "width", "height")]
        assert ",".join(v or "" for v in box) == expected["tile_box"]
        assert page.locator(".figcaption .name").inner_text() == "holiday.jpg"
        _shot(page, f"check-{scheme}.png")
        _clean(watch)
        page.context.close()


def test_check_shows_provenance_evidence(site: Site, browser: Browser, tmp_path: Path) -> None:
    # A generator-like picture carrying Stable Diffusion web UI's parameters text.
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_parameters())
    upload = tmp_path / "lighthouse.png"
    upload.write_bytes(encode(generator_like(np.random.default_rng(8), 320, 240), "PNG", pnginfo=info))
    page, watch = _open(browser, site.url)
    page.goto(site.url + "/")
    page.set_input_files("input[name=file]", str(upload))
    page.click("button[type=submit]")
    result = _result(page)
    assert result.get_attribute("data-verdict") == "ai_declared"
    facts = page.inner_text("dl.facts")
    assert "Stable Diffusion" in facts or "a1111" in facts.lower() or "automatic1111" in facts.lower()
    assert page.locator("ul.evidence li").count() >= 1
    _shot(page, "check-declared.png")
    _clean(watch)
    page.context.close()


def test_check_a_url_fetched_through_the_guard(site: Site, browser: Browser, http: Any) -> None:
    data = jpeg_bytes(3, (200, 150))
    image_url = http.add("/photo.jpg", data)
    page, watch = _open(browser, site.url)
    page.goto(site.url + "/")
    page.fill("input[name=url]", image_url)
    page.click("button[type=submit]")
    result = _result(page)
    assert float(result.get_attribute("data-p-real") or "nan") == _api_check(site, data)["p_real"]
    assert (page.get_attribute(".figure img", "src") or "").startswith("data:image/jpeg;base64,")
    # The page fetched the image on the server; the browser itself never asked the image's host.
    assert watch.external == []
    page.context.close()


@pytest.mark.parametrize(
    ("url", "upload", "kind", "words"),
    [
        ("", b"GIF89 but not really an image", "not_an_image", "image"),
        ("http://10.1.2.3/photo.jpg", None, "refused_address", "10.1.2.3"),
        ("ftp://example.org/photo.jpg", None, "", "http"),
        ("", None, "", "choose an image"),
    ],
)
def test_check_errors_are_messages(
    site: Site, browser: Browser, tmp_path: Path, url: str, upload: bytes | None, kind: str, words: str
) -> None:
    page, watch = _open(browser, site.url)
    page.goto(site.url + "/")
    if upload is not None:
        path = tmp_path / "notes.jpg"
        path.write_bytes(upload)
        page.set_input_files("input[name=file]", str(path))
    if url:
        # The field's own URL check would stop an ftp:// URL in the browser; the server must refuse it too.
        page.eval_on_selector("input[name=url]", "el => el.type = 'text'")
        page.fill("input[name=url]", url)
    page.click("button[type=submit]")
    message = page.locator(".message[data-error-kind]")
    message.wait_for()
    text = message.inner_text()
    assert words in text and "Traceback" not in page.content()
    assert message.get_attribute("data-error-kind") == kind
    assert page.locator("[data-p-real]").count() == 0
    _shot(page, f"check-error-{kind or 'input'}.png")
    _clean(watch)
    page.context.close()


def test_a_file_over_the_upload_cap_is_a_message(site: Site, browser: Browser, tmp_path: Path) -> None:
    from aiscan.jobs.settings import get_settings

    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(6, (300, 300)))
    capped = dataclasses.replace(get_settings(), max_upload_bytes=4096)
    with serve(capped) as url:
        page, watch = _open(browser, url)
        page.goto(url + "/")
        page.set_input_files("input[name=file]", str(big))
        page.click("button[type=submit]")
        message = page.locator("[data-too-large]")
        message.wait_for()
        assert "at most 4096 bytes" in message.inner_text()
        assert page.url == url + "/" and page.locator("[data-p-real]").count() == 0
        # The server refuses it as well, whatever the page does.
        response = httpx.post(url + "/check", files={"file": ("big.png", big.read_bytes())})
        assert response.status_code == 413
        _clean(watch)
        page.context.close()


def test_hostile_file_name_is_text_on_the_check_page(site: Site, browser: Browser, tmp_path: Path) -> None:
    path = tmp_path / HOSTILE
    path.write_bytes(png_bytes(5, (64, 64)))
    page, watch = _open(browser, site.url)
    page.goto(site.url + "/")
    page.set_input_files("input[name=file]", str(path))
    page.click("button[type=submit]")
    page.wait_for_selector("[data-p-real]")
    assert page.locator(".figcaption .name").inner_text() == HOSTILE
    assert page.locator("img[src=x]").count() == 0
    _clean(watch)
    page.context.close()


def test_job_page_pages_through_every_image(site: Site, browser: Browser) -> None:
    page, watch = _open(browser, site.url)
    page.goto(f"{site.url}/jobs/{site.job_id}?limit={PAGE_SIZE}")
    _shot(page, "job.png")
    seen: list[str] = []
    pages = 0
    while True:
        rows = _rows(page)
        assert 0 < len(rows) <= PAGE_SIZE
        seen += rows
        pages += 1
        nxt = page.locator("a[rel=next]")
        if nxt.count() == 0:
            break
        nxt.click()
        page.wait_for_load_state()
    assert pages == 3
    assert len(seen) == len(set(seen)) and set(seen) == site.names
    # Sorted by p-score, low first, scored images before the one that failed.
    summary = httpx.get(f"{site.url}/api/v1/jobs/{site.job_id}").json()
    assert summary["counts"]["total"] == len(site.names)
    _clean(watch)
    page.context.close()


def test_job_page_counts_histogram_and_downloads(site: Site, browser: Browser) -> None:
    summary = httpx.get(f"{site.url}/api/v1/jobs/{site.job_id}").json()
    page, watch = _open(browser, site.url, "dark")
    page.goto(f"{site.url}/jobs/{site.job_id}")
    tally = page.query_selector_all("dd[data-verdict]")
    shown = {el.get_attribute("data-verdict"): int(el.inner_text()) for el in tally}
    assert shown == summary["verdicts"]
    bars = page.query_selector_all("svg.histogram rect.hbar")
    assert len(bars) == 20
    scored = len(site.names) - summary["counts"]["errors"]
    titles = [b.eval_on_selector("title", "t => t.textContent") for b in bars]
    assert sum(int(title.split(": ")[1].split()[0]) for title in titles) == scored
    links = page.eval_on_selector_all(".downloads a", "as => as.map(a => a.getAttribute('href'))")
    assert links == [
        f"/api/v1/jobs/{site.job_id}/report.csv",
        f"/api/v1/jobs/{site.job_id}/report.jsonl",
        f"/jobs/{site.job_id}/report.html",
    ]
    for link in links:
        assert httpx.get(site.url + link).status_code == 200
    _shot(page, "job-dark.png")
    _clean(watch)
    page.context.close()


def test_job_page_filters_change_the_rows(site: Site, browser: Browser) -> None:
    page, watch = _open(browser, site.url)
    page.goto(f"{site.url}/jobs/{site.job_id}?limit=100")
    everything = _rows(page)
    assert set(everything) == site.names
    page.select_option("select[name=error_kind]", "not_an_image")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert [Path(uri).name for uri in _rows(page)] == ["broken.jpg"]
    page.goto(f"{site.url}/jobs/{site.job_id}?limit=100&verdict=ai_declared")
    assert [Path(uri).name for uri in _rows(page)] == ["declared-sd.png"]
    for label in ("real", "fake", "uncertain"):
        page.goto(f"{site.url}/jobs/{site.job_id}?limit=100&label={label}")
        labels = page.locator("[data-image-uri] td:nth-child(5)").all_inner_texts()
        assert set(labels) <= {label}
    # Sorting by p-score from the high end reverses the scored rows.
    page.goto(f"{site.url}/jobs/{site.job_id}?limit=100&sort=-p_real")
    high_first = _rows(page)
    page.goto(f"{site.url}/jobs/{site.job_id}?limit=100&sort=p_real")
    low_first = _rows(page)
    assert high_first[:-1] == list(reversed(low_first[:-1]))
    # An unknown filter value or a mangled cursor is a message, not a traceback.
    page.goto(f"{site.url}/jobs/{site.job_id}?verdict=maybe")
    assert "maybe" in page.inner_text(".message")
    page.goto(f"{site.url}/jobs/{site.job_id}?cursor=not-a-cursor")
    assert page.locator(".message").count() == 1
    response = page.goto(f"{site.url}/jobs/999999")
    assert response is not None and response.status == 404
    _clean(watch)
    page.context.close()


def test_hostile_file_name_is_text_on_the_job_page(site: Site, browser: Browser) -> None:
    page, watch = _open(browser, site.url)
    page.goto(f"{site.url}/jobs/{site.job_id}?limit=100")
    hostile = [uri for uri in _rows(page) if uri.endswith(HOSTILE)]
    assert len(hostile) == 1
    row = page.locator(f"tr[data-image-uri={json.dumps(hostile[0])}] td.uri")
    assert row.locator(".name").inner_text() == HOSTILE
    assert row.locator(".folder").inner_text() + HOSTILE == hostile[0]
    assert page.locator("img[src=x]").count() == 0
    _clean(watch)
    page.context.close()


def test_html_report_runs_no_script_and_lists_every_image(
    site: Site, browser: Browser, tmp_path: Path
) -> None:
    response = httpx.get(f"{site.url}/jobs/{site.job_id}/report.html", timeout=60)
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    report = tmp_path / "report.html"
    report.write_bytes(response.content)
    page, watch = _open(browser, None)
    page.goto(report.as_uri())
    assert page.evaluate("document.scripts.length") == 0
    assert set(_rows(page)) == site.names and len(_rows(page)) == len(site.names)
    assert HOSTILE in page.inner_text("body")
    assert page.locator("img[src=x]").count() == 0
    _shot(page, "report.png")
    assert watch.dialogs == [] and watch.console == [] and watch.external == []
    page.context.close()


def test_submit_a_scan_and_follow_it_live(site: Site, browser: Browser, tmp_path: Path) -> None:
    folder = tmp_path / "more"
    folder.mkdir()
    for i in range(3):
        (folder / f"m{i}.jpg").write_bytes(jpeg_bytes(30 + i, (120, 90)))
    page, watch = _open(browser, site.url)
    page.goto(site.url + "/scan")
    assert page.locator("select[name=model] option").all_inner_texts() == ["tiny:1 (default) · tiles"]
    page.fill("textarea[name=sources]", f"{folder}\n")
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/jobs/*")
    job_id = int(page.url.split("/jobs/")[1].split("?")[0].split("#")[0])
    # The job page follows the job by polling the API and reloads itself when it has finished.
    page.wait_for_selector('[data-job-id][data-status="done"]', timeout=120_000)
    expect(page.locator("[data-image-uri]")).to_have_count(3, timeout=60_000)
    page.goto(site.url + "/jobs")
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    assert row.locator('[data-field="status"]').inner_text() == "done"
    assert row.locator('[data-field="done"]').inner_text() == "3"
    assert page.locator(f'tr[data-job-id="{site.job_id}"]').count() == 1
    _shot(page, "jobs.png")
    # An empty list of sources is a message on the form, not a job.
    page.goto(site.url + "/scan")
    page.eval_on_selector("textarea", "el => el.removeAttribute('required')")
    page.click("button[type=submit]")
    assert "source" in page.inner_text(".message")
    _clean(watch)
    page.context.close()


def test_forms_posted_from_another_site_are_refused(site: Site) -> None:
    evil = {"Origin": "http://evil.example"}
    response = httpx.post(f"{site.url}/scan", data={"sources": "/etc"}, headers=evil)
    assert response.status_code == 403
    response = httpx.post(f"{site.url}/check", data={"url": "http://127.0.0.1:1/x.jpg"}, headers=evil)
    assert response.status_code == 403
    same = {"Origin": site.url}
    response = httpx.post(f"{site.url}/check", data={"url": ""}, headers=same)
    assert response.status_code == 400 and "choose an image" in response.text


def test_evidence_lines_and_tile_boxes() -> None:
    from aiscan.jobs.histogram import histogram_layout
    from aiscan.jobs.web.present import evidence_items, tile_rect

    evidence = {"c2pa": {"signer": {"issuer": "Example CA"}, "actions": ["c2pa.created"]}, "empty": None}
    lines = evidence_items(evidence)
    assert lines == [("c2pa.signer.issuer", "Example CA"), ("c2pa.actions", "c2pa.created")]
    assert evidence_items({"notes": [{"a": True}]}) == [("notes[0].a", "yes")]
    assert evidence_items(None) == []
    image = {"width": 100, "height": 80}
    assert tile_rect({**image, "tile_box": "60,40,40,40"}) is not None
    # A box outside the image, or one that does not parse, is not drawn.
    assert tile_rect({**image, "tile_box": "80,40,40,40"}) is None
    assert tile_rect({**image, "tile_box": "1,2,3"}) is None
    assert tile_rect({**image, "tile_box": None}) is None
    layout = histogram_layout([0, 2, 4, 0])
    assert [bar.count for bar in layout.bars] == [0, 2, 4, 0] and layout.peak == 4 and layout.total == 6
    assert layout.bars[2].h == 2 * layout.bars[1].h and layout.bars[0].h == 0
    assert histogram_layout([]).bars == []
