"""The JSON API under /api/v1: checks, jobs, results, reports and models. Field names are the report's
column names; errors are JSON {"detail": ...} with the status that fits (see jobs.web.app)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile

from aiscan.jobs.web.services import BadInput, WebServices

router = APIRouter(tags=["api"])
JobId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ResultId = Annotated[int, Path(ge=1, le=2**63 - 1)]
REPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}

_CLASSIFY_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"url": {"type": "string", "description": "an http(s) URL of an image"}},
                    "required": ["url"],
                }
            },
        },
    }
}


class JobRequest(BaseModel):
    """A scan to run: sources as `aiscan scan` takes them, and a model (default: the default model)."""

    sources: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=1000)
    model: str | None = Field(default=None, max_length=200)


class JobCreated(BaseModel):
    job_id: int


def _services(request: Request) -> WebServices:
    services: WebServices = request.app.state.services
    return services


@router.get("/health")
def health(request: Request) -> dict[str, Any]:
    """The server answers, its database is reachable, and which model a check uses."""
    model = _services(request).default_model()
    return {"status": "ok", "model": model.ref if model else None}


@router.post("/classify", openapi_extra=_CLASSIFY_BODY)
async def classify(request: Request) -> dict[str, Any]:
    """Check one image: a multipart `file` upload, or JSON {"url": ...} fetched through the SSRF guard."""
    services = _services(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=4) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadInput("send the image as a multipart field named `file`")
            data = await upload.read()
            name = upload.filename or "upload"
        return await run_in_threadpool(services.classify, data, name)
    if kind == "application/json":
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise BadInput('the body is not valid JSON: send {"url": "https://..."}') from None
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise BadInput('send {"url": "https://..."} with the image\'s http(s) URL')
        return await run_in_threadpool(services.classify_url, url)
    raise BadInput("send multipart/form-data with a `file`, or application/json with a `url`")


@router.post("/jobs", status_code=201)
def submit(request: Request, body: JobRequest) -> JobCreated:
    """Create a scan job; without a broker this server runs it, one job at a time."""
    return JobCreated(job_id=_services(request).submit(body.sources, body.model))


@router.get("/jobs")
def jobs(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> list[dict[str, Any]]:
    """The most recent jobs' summaries, newest first."""
    return _services(request).jobs(limit)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: JobId) -> dict[str, Any]:
    """A job's state and counts: the same object as `aiscan jobs show --json`."""
    return _services(request).job(job_id)


@router.get("/jobs/{job_id}/results")
def results(
    request: Request,
    job_id: JobId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    verdict: Annotated[str | None, Query(max_length=40)] = None,
    label: Annotated[str | None, Query(max_length=40)] = None,
    error_kind: Annotated[str | None, Query(max_length=40)] = None,
    sort: Literal["p_real", "-p_real", "image_uri"] = "p_real",
) -> dict[str, Any]:
    """One page of results: {"items": [...], "next_cursor": ...}; pass next_cursor back for the next."""
    return _services(request).results(
        job_id, limit=limit, cursor=cursor, verdict=verdict, label=label, error_kind=error_kind, sort=sort
    )


@router.get("/jobs/{job_id}/report.{fmt}")
def report(request: Request, job_id: JobId, fmt: Literal["csv", "jsonl"]) -> StreamingResponse:
    """The job's report, streamed as it is read: the same bytes as `aiscan report JOB --format FMT`."""
    chunks = _services(request).report_lines(job_id, fmt)
    disposition = f'attachment; filename="aiscan-job-{job_id}.{fmt}"'
    return StreamingResponse(
        chunks, media_type=REPORT_TYPES[fmt], headers={"content-disposition": disposition}
    )


@router.get(
    "/jobs/{job_id}/thumbnails/{result_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, 404: {"description": "no such result or thumbnail"}},
)
def thumbnail(request: Request, job_id: JobId, result_id: ResultId) -> Response:
    """The stored thumbnail of one result of a job (never read from a path)."""
    data = _services(request).thumbnail(job_id, result_id)
    if data is None:
        return Response(
            json.dumps({"detail": f"job {job_id} has no thumbnail for result {result_id}"}),
            status_code=404,
            media_type="application/json",
        )
    return Response(data, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


@router.get("/models")
def models(request: Request) -> list[dict[str, Any]]:
    """Registered models; `default` marks the one checks and scans use unless told otherwise."""
    return _services(request).models()
