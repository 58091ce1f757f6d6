"""The HTML pages: check an image, the jobs list, one job's results, submit a scan.

Routes only translate forms and query strings to :class:`WebServices` and the browse queries, and render
Jinja2 templates with autoescape on; errors a person can cause become a page with the message, never a
traceback. Page routes are left out of the OpenAPI document (that documents /api/v1).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool

from aiscan.jobs.errors import AiscanError, NotFound
from aiscan.jobs.histogram import histogram_layout
from aiscan.jobs.reports import split_uri
from aiscan.jobs.store.browse import (
    ERROR_KINDS,
    LABELS,
    MAX_LIMIT,
    VERDICTS,
    BadFilter,
    Sort,
    p_real_histogram,
    verdict_counts,
)
from aiscan.jobs.store.browse import (
    SORTS as SORT_KEYS,
)
from aiscan.jobs.store.models import JobStatus
from aiscan.jobs.summary import ordered_verdicts
from aiscan.jobs.web.present import evidence_items, tile_rect
from aiscan.jobs.web.services import WebError, WebServices
from aiscan.model.provenance.containers import sniff_mime

TEMPLATES_DIR = Path(__file__).parent / "templates"
PAGE_LIMIT = 50  # results per job page unless ?limit= says otherwise
JOBS_LIMIT = 50
SORTS = (
    ("p_real", "p-score, low (AI-like) first"),
    ("-p_real", "p-score, high first"),
    ("image_uri", "image"),
)
# Images a browser shows; others (TIFF) are checked but not displayed.
SHOWABLE = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/bmp", "image/avif"})
VERDICT_TEXT = {
    "ai_declared": "AI-generated (declared by its provenance)",
    "capture_declared": "Camera capture (declared by its provenance)",
    "fake": "Likely AI-generated",
    "real": "Likely a real photograph",
    "uncertain": "The detector cannot tell",
    "error": "Could not be checked",
}

router = APIRouter(include_in_schema=False)


def _when(value: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM UTC' (the summaries store UTC)."""
    if not value:
        return "–"
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return value


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["verdict_order"] = ordered_verdicts
    env.filters["when"] = _when
    env.filters["split_uri"] = split_uri
    return env


ENV = _environment()


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Template ``name`` rendered with ``context`` as an HTML response."""
    return HTMLResponse(ENV.get_template(name).render(**context), status_code=status_code)


def _services(request: Request) -> WebServices:
    services: WebServices = request.app.state.services
    return services


def _error_page(
    status: int, message: str, heading: str = "Something went wrong", back: str = "/"
) -> HTMLResponse:
    back_text = {"/": "Check an image", "/jobs": "All jobs", "/scan": "Submit a scan"}.get(back, "Back")
    return render(
        "error.html",
        status,
        here="",
        heading=heading,
        status=status,
        message=" ".join(message.split()),
        back_href=back,
        back_text=back_text,
    )


def _same_origin(request: Request) -> bool:
    """False for a form another site posted here (cross-site request forgery of a scan or a fetch).

    Browsers say where a request comes from in Sec-Fetch-Site; older ones only in Origin, which is
    "null" under this app's no-referrer policy, so only a real, different origin is refused there.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _cross_site() -> HTMLResponse:
    return _error_page(403, "this form was posted from another site; open the page here and submit it again")


# ---------------------------------------------------------------- check an image


def _check_page(
    services: WebServices,
    status: int = 200,
    *,
    result: dict[str, Any] | None = None,
    data: bytes = b"",
    name: str = "",
    url: str = "",
    error: str | None = None,
    error_kind: str | None = None,
) -> HTMLResponse:
    image_src = None
    if result is not None and data:
        mime = sniff_mime(data)
        if mime in SHOWABLE:
            image_src = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return render(
        "check.html",
        status,
        here="check",
        max_bytes=services.settings.max_upload_bytes,
        result=result,
        image_src=image_src,
        source_name=name,
        url=url,
        error=error,
        error_kind=error_kind,
        tile=tile_rect(result) if result else None,
        evidence=evidence_items(result.get("evidence")) if result else [],
        verdict_text=VERDICT_TEXT.get(str(result.get("verdict")), "") if result else "",
    )


@router.get("/", response_class=HTMLResponse)
def check_form(request: Request) -> HTMLResponse:
    return _check_page(_services(request))


@router.post("/check", response_class=HTMLResponse)
async def check(
    request: Request,
    file: Annotated[UploadFile | None, Form()] = None,
    url: Annotated[str, Form()] = "",
) -> HTMLResponse:
    """Score an uploaded file or, with no file, the image at ``url``; the result or a clear message."""
    if not _same_origin(request):
        return _cross_site()
    services = _services(request)
    data = await file.read() if file is not None else b""
    name = (file.filename or "upload") if file is not None else ""
    url = url.strip()
    try:
        # The check is CPU-bound and the fetch blocks: both run in the thread pool, off the event loop.
        if data:
            result = await run_in_threadpool(services.classify, data, name)
        elif url:
            data = await run_in_threadpool(services.fetch_url, url)
            result = await run_in_threadpool(services.classify, data, url)
            name = url
        else:
            return _check_page(services, 400, error="choose an image file or enter an image URL")
    except (WebError, AiscanError) as exc:
        status = exc.status if isinstance(exc, WebError) else 400
        kind = getattr(exc, "error_kind", None)
        return _check_page(services, status, url=url, error=str(exc), error_kind=kind)
    return _check_page(services, result=result, data=data, name=name, url=url)


# ---------------------------------------------------------------- jobs


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    jobs = _services(request).jobs(JOBS_LIMIT)
    return render("jobs.html", here="jobs", jobs=jobs, limit=JOBS_LIMIT, finished=JobStatus.FINISHED)


def _job_href(job_id: int, **params: str | int | None) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"/jobs/{job_id}?{query}#results"


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_id: int,
    verdict: str = "",
    label: str = "",
    error_kind: str = "",
    sort: str = "p_real",
    cursor: str = "",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = PAGE_LIMIT,
) -> HTMLResponse:
    """One job: counts, histogram, and one filtered, sorted page of its results."""
    services = _services(request)
    try:
        if sort not in SORT_KEYS:
            raise BadFilter(f"unknown sort {sort!r}: use one of {', '.join(SORT_KEYS)}")
        job = services.job(job_id)
        page = services.results(
            job_id,
            limit=limit,
            cursor=cursor or None,
            verdict=verdict or None,
            label=label or None,
            error_kind=error_kind or None,
            sort=cast(Sort, sort),
        )
        with services.db.session() as session:
            verdicts = verdict_counts(session, job_id)
            histogram = p_real_histogram(session, job_id)
    except NotFound as exc:
        return _error_page(404, str(exc), "No such job", "/jobs")
    except AiscanError as exc:
        return _error_page(400, str(exc), "Cannot show these results", f"/jobs/{job_id}")
    filters = {"verdict": verdict, "label": label, "error_kind": error_kind}
    next_cursor = page["next_cursor"]
    return render(
        "job.html",
        here="jobs",
        job=job,
        live=job["status"] not in JobStatus.FINISHED,
        verdicts=verdicts,
        hist=histogram_layout(histogram),
        items=page["items"],
        filters=filters,
        filtered=any(filters.values()),
        sort=sort,
        limit=limit,
        cursor=cursor,
        options={"verdicts": VERDICTS, "labels": LABELS, "error_kinds": ERROR_KINDS, "sorts": SORTS},
        first_href=_job_href(job_id, **filters, sort=sort, limit=limit),
        next_href=(
            _job_href(job_id, **filters, sort=sort, limit=limit, cursor=next_cursor) if next_cursor else None
        ),
    )


@router.get("/jobs/{job_id}/report.html")
def job_report_html(request: Request, job_id: int) -> Response:
    """The self-contained HTML report streamed as a download: `aiscan report --format html`'s file."""
    services = _services(request)
    try:
        chunks: Iterator[str] = services.report_lines(job_id, "html")
    except NotFound as exc:
        return _error_page(404, str(exc), "No such job", "/jobs")
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in chunks),
        media_type="text/html; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="aiscan-job-{job_id}.html"'},
    )


# ---------------------------------------------------------------- submit a scan


def _scan_page(services: WebServices, status: int = 200, **context: Any) -> HTMLResponse:
    models = services.models()
    default = next((m["ref"] for m in models if m.get("default")), None)
    context.setdefault("selected", default)
    context.setdefault("sources", "")
    context.setdefault("error", None)
    return render("scan.html", status, here="scan", models=models, **context)


@router.get("/scan", response_class=HTMLResponse)
def scan_form(request: Request) -> HTMLResponse:
    return _scan_page(_services(request))


@router.post("/scan", response_model=None)
def scan(
    request: Request,
    sources: Annotated[str, Form()] = "",
    model: Annotated[str, Form()] = "",
) -> Response:
    """Create a job from the sources (one per line) and go to its page."""
    if not _same_origin(request):
        return _cross_site()
    services = _services(request)
    lines = [line.strip() for line in sources.splitlines() if line.strip()]
    try:
        job_id = services.submit(lines, model or None)
    except AiscanError as exc:
        return _scan_page(services, 400, error=" ".join(str(exc).split()), sources=sources, selected=model)
    return RedirectResponse(f"/jobs/{job_id}", status_code=303)
