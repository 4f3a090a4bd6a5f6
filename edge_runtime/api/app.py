"""The FastAPI application: routers, the service container, life cycle and error mapping."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
from edge_runtime.api.request_log import RequestLogMiddleware
from edge_runtime.api.uploads import BodyLimitMiddleware
from edge_runtime.camera import CameraError, CameraNotConfiguredError
from edge_runtime.events.daemon import start_event_sinks, stop_event_sinks
from edge_runtime.inference.model_dir import ModelDirError
from edge_runtime.inference.preprocess import ImageError
from edge_runtime.services.errors import (
    ConflictError,
    GoneError,
    InvalidRequestError,
    NotFoundError,
)
from edge_runtime.services.runtime import Runtime, build_runtime
from edge_runtime.settings import Settings
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
    CameraNotConfiguredError: 409,  # frames asked of a daemon without a camera
    CameraError: 503,
    ModelDirError: 503,
}


def _error(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


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
    # history before inspections: /inspections/counts is not /inspections/{id}
    for module in (system, products, jobs, history, inspections, models, bundles, curation,
                   stream):
        app.include_router(module.router)
    web.mount(app)
    for exc_type, status in STATUS_OF.items():
        app.add_exception_handler(exc_type, _error(status))
    app.add_exception_handler(Exception, _unexpected)
    return app
