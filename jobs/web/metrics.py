"""Prometheus metrics at /metrics, in a registry of the app's own: what the database holds (images by
verdict and error kind, jobs by status; read at scrape time) and the request latency by route."""

from __future__ import annotations

import time
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiscan.jobs.store.db import Database
from aiscan.jobs.store.models import Job, Result
from aiscan.jobs.web.services import WebServices

router = APIRouter(include_in_schema=False)
# Requests that matched no route share one label: a label per unknown path would grow without bound.
UNMATCHED = "<unmatched>"


class StoreCollector(Collector):
    """Counts from the database at each scrape: three GROUP BY queries, no rows read."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterable[Metric]:
        verdicts = GaugeMetricFamily("aiscan_images", "Result rows by verdict.", labels=["verdict"])
        kinds = GaugeMetricFamily(
            "aiscan_image_errors", "Result rows that failed, by error kind.", labels=["error_kind"]
        )
        jobs = GaugeMetricFamily("aiscan_jobs", "Jobs by status.", labels=["status"])
        with self.db.session() as s:
            for verdict, count in s.execute(select(Result.verdict, func.count()).group_by(Result.verdict)):
                verdicts.add_metric([verdict or "none"], count)
            errors = select(Result.error_kind, func.count()).where(Result.error_kind.is_not(None))
            for kind, count in s.execute(errors.group_by(Result.error_kind)):
                kinds.add_metric([kind or "none"], count)
            for status, count in s.execute(select(Job.status, func.count()).group_by(Job.status)):
                jobs.add_metric([status], count)
        return [verdicts, kinds, jobs]


class AppMetrics:
    """The app's registry and its request latency histogram."""

    def __init__(self, services: WebServices) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(StoreCollector(services.db))
        self.latency = Histogram(
            "aiscan_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route template.",
            ["method", "route", "status"],
            registry=self.registry,
        )


def registry_of(app: FastAPI, services: WebServices) -> AppMetrics:
    """The app's metrics, made once and kept on its state for the /metrics route."""
    metrics = AppMetrics(services)
    app.state.metrics = metrics
    return metrics


class LatencyMiddleware:
    """Observes each HTTP request's duration under its route's template (/api/v1/jobs/{job_id})."""

    def __init__(self, app: ASGIApp, registry: AppMetrics, prefixes: dict[int, str]) -> None:
        self.app = app
        self.metrics = registry
        # The prefix an included router's routes were mounted under, by id of route: a route's own
        # path does not carry it.
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            template = self._template(scope.get("route"))
            self.metrics.latency.labels(scope["method"], template, str(status[0])).observe(
                time.perf_counter() - started
            )

    def _template(self, route: BaseRoute | None) -> str:
        path = getattr(route, "path", None)
        if route is None or not isinstance(path, str):
            return UNMATCHED
        if isinstance(route, Mount):  # static files: one series for the mount, not one per file
            return path + "/{path}"
        return self.prefixes.get(id(route), "") + path


@router.get("/metrics")
def metrics_page(request: Request) -> Response:
    """Prometheus text format of the app's registry."""
    metrics: AppMetrics = request.app.state.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
