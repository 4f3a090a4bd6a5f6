"""The FastAPI application: routers, the service container, life cycle and error mapping."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import edge_runtime
from edge_runtime.api.endpoints import (
    bundles,
    curation,
    history,
    inspections,
    jobs,
    models,
    products,
    stream,
    system,
    web,
)
from edge_runtime.api.origin import OriginHostMiddleware, allowed_host_names
from edge_runtime.api.request_log import RequestLogMiddleware
from edge_runtime.api.uploads import BodyLimitMiddleware
from edge_runtime.camera import CameraError, CameraNotConfiguredError
from edge_runtime.events.daemon import start_event_sinks, stop_event_sinks
from edge_runtime.inference.model_dir import ModelDirError
from edge_runtime.inference.preprocess import ImageError, ImageTooLargeError
from edge_runtime.memory import settle
from edge_runtime.services.errors import (
    ConflictError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
)
from edge_runtime.services.runtime import Runtime, build_runtime
from edge_runtime.settings import Settings
from edge_runtime.storage.db import StorageFullError
from edge_runtime.systemd import Notifier

log = logging.getLogger("edge_runtime")
MAX_FILES_PER_REQUEST = 32

# what each refusal means over HTTP (the most specific class in an exception's MRO wins)
STATUS_OF = {
    NotFoundError: 404,
    GoneError: 410,
    ConflictError: 409,
    InvalidRequestError: 422,
    ImageError: 422,
    ImageTooLargeError: 413,  # a small file that would decode to too many pixels
    CameraNotConfiguredError: 409,  # frames asked of a daemon without a camera
    CameraError: 503,
    ModelDirError: 503,
    StorageFullError: 507,  # the disk is full: nothing was written; verdicts still flow
}


def _error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def _finite(value):
    """JSON has no NaN or Infinity: a rejected input that held one is echoed as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _documented_methods(app: FastAPI, path: str) -> set[str]:
    """The methods the OpenAPI document lists for the path template ``path`` matches."""
    methods: set[str] = set()
    for template, operations in app.openapi().get("paths", {}).items():
        if re.fullmatch(re.sub(r"\{[^/{}]+\}", "[^/]+", template), path):
            methods |= {method.upper() for method in operations}
    return methods


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own errors; a 405's Allow header names every method the path has (the
    router alone names only the first route that matched the path)."""
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        methods = _documented_methods(request.app, request.url.path)
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def create_app(settings: Settings, runtime: Runtime | None = None,
               notifier: Notifier | None = None) -> FastAPI:
    runtime = runtime or build_runtime(settings)
    notifier = notifier or Notifier(None, None)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        runtime.jobs.start_monitor()
        sinks = start_event_sinks(runtime)  # before the line: its verdicts are events
        runtime.line.start()
        settle()  # start-up done: import-time code (ORT, numpy, pydantic) ran once
        live = runtime.models.live
        notifier.ready(live.version if live else None)
        watchdog = asyncio.create_task(notifier.watchdog())
        yield
        watchdog.cancel()
        notifier.stopping()
        runtime.line.close()
        runtime.jobs.shutdown()
        runtime.heads.shutdown()
        stop_event_sinks(sinks)

    app = FastAPI(title="edge-runtime", version=edge_runtime.__version__, lifespan=lifespan,
                  description="On-device continual-learning visual anomaly detection",
                  docs_url=None, redoc_url=None)  # served offline by endpoints/web.py
    app.state.runtime = runtime
    limit = int(settings.api.max_upload_mb * 2**20) * MAX_FILES_PER_REQUEST
    app.add_middleware(BodyLimitMiddleware, limit=limit)
    app.add_middleware(RequestLogMiddleware)
    # added last, so it runs first: a refused request is never read
    app.add_middleware(OriginHostMiddleware,
                       names=allowed_host_names(settings.api.host, settings.api.allowed_hosts))
    # history before inspections: /inspections/counts is not /inspections/{id}
    for module in (system, products, jobs, history, inspections, models, bundles, curation,
                   stream):
        app.include_router(module.router)
    web.mount(app)
    for exc_type, status in STATUS_OF.items():
        app.add_exception_handler(exc_type, _error(status))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    if not settings.api.token:
        app.openapi = _without_security(app)
    return app


def _without_security(app: FastAPI):
    """With no api.token the daemon asks for none: the OpenAPI document must not either."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            schema.get("components", {}).pop("securitySchemes", None)
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi
