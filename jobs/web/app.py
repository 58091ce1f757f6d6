"""The ASGI app of `aiscan serve`: the JSON API under /api/v1, the pages, static files and /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from aiscan.jobs.errors import AiscanError, NotFound, Unavailable
from aiscan.jobs.settings import Settings
from aiscan.jobs.store.db import driver_error, is_transient
from aiscan.jobs.web import api, metrics, pages
from aiscan.jobs.web.security import SecurityMiddleware
from aiscan.jobs.web.services import WebError, WebServices

STATIC_DIR = Path(__file__).parent / "static"
API_PREFIX = "/api/v1"


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``: one WebServices (model, database, job runner) shared by every route."""
    services = WebServices(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        services.close()

    app = FastAPI(
        title="aiscan",
        summary="Check images for AI generation; browse and export scan jobs.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    app.include_router(api.router, prefix=API_PREFIX)
    app.include_router(pages.router)
    app.include_router(metrics.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(WebError, _web_error)  # type: ignore[arg-type]
    app.add_exception_handler(NotFound, _not_found)  # type: ignore[arg-type]
    app.add_exception_handler(AiscanError, _aiscan_error)  # type: ignore[arg-type]
    app.add_exception_handler(SQLAlchemyError, _database_error)  # type: ignore[arg-type]
    app.add_middleware(
        metrics.LatencyMiddleware,
        registry=metrics.registry_of(app, services),
        prefixes={id(route): API_PREFIX for route in api.router.routes},
    )
    app.add_middleware(SecurityMiddleware, settings=settings)
    return app


def error_body(exc: AiscanError) -> dict[str, str]:
    """An error as JSON: its message, and for an image the error kind a scan would record."""
    body = {"detail": " ".join(str(exc).split())}
    kind = getattr(exc, "error_kind", None)
    if kind:
        body["error_kind"] = str(kind)
    return body


async def _web_error(_request: Request, exc: WebError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status)


async def _not_found(_request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=404)


async def _database_error(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
    # A database that fails mid-request: 503 when it may pass (down, restarting, locked), else 500;
    # the message names the fault's class and SQLSTATE, never the statement or its values.
    if is_transient(exc):
        detail = f"the database is unavailable just now ({type(driver_error(exc)).__name__}); try again"
        return JSONResponse({"detail": detail}, status_code=503)
    return JSONResponse(
        {"detail": f"the database refused the request: {type(driver_error(exc)).__name__}"}, 500
    )


async def _aiscan_error(_request: Request, exc: AiscanError) -> JSONResponse:
    # A database or broker that is down is the server's state, not the request's fault (503); anything
    # else aiscan refuses on purpose (a source that cannot be scanned, a bad cursor) is the request's,
    # and the message says what to change.
    return JSONResponse(error_body(exc), status_code=503 if isinstance(exc, Unavailable) else 400)
