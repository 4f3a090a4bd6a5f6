"""The FastAPI application: wiring, start-up recovery and error mapping."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from edge_runtime import repositories as repo
from edge_runtime.api.deps import Runtime
from edge_runtime.api.endpoints import inspections, jobs, products, system
from edge_runtime.api.uploads import BodyLimitMiddleware
from edge_runtime.camera import CameraError, make_camera
from edge_runtime.db import Database
from edge_runtime.model_dir import ModelDirError
from edge_runtime.preprocess import ImageError
from edge_runtime.services.inspection import InspectionService, NotTrainedError
from edge_runtime.services.jobs import JobConflictError, JobManager, TooFewCapturesError
from edge_runtime.services.line import start_line_bridge
from edge_runtime.services.models import ModelRegistry
from edge_runtime.settings import Settings
from edge_runtime.systemd import Notifier

log = logging.getLogger("edge_runtime")
MAX_FILES_PER_REQUEST = 32


def build_runtime(settings: Settings) -> Runtime:
    """Open state, fail jobs a crash interrupted, load the last good model."""
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    db = Database(data / "state.db")
    with db.connect() as conn:
        failed = repo.fail_interrupted_jobs(
            conn, "the daemon stopped while this job ran; start training again")
    if failed:
        log.warning("marked %d interrupted training job(s) as failed", failed)
    registry = ModelRegistry(data / "models", settings.model.threads, settings.model.spinning)
    live = registry.open_last_good()
    if live:
        with db.connect() as conn:
            repo.set_current_version(conn, live.version)
    runtime = Runtime(
        settings=settings, db=db, registry=registry,
        inspections=InspectionService(db, registry, settings.inspection.keep_recent_maps,
                                      settings.inspection.keep_records),
        jobs=JobManager(settings, db, registry),
        camera=make_camera(settings.camera.kind, settings.camera.directory),
        started_at=time.time(),
    )
    return runtime


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
        runtime.bridge = start_line_bridge(runtime)
        live = runtime.registry.live
        notifier.ready(live.version if live else None)
        watchdog = asyncio.create_task(notifier.watchdog())
        yield
        watchdog.cancel()
        notifier.stopping()
        if runtime.bridge is not None:
            runtime.bridge.close()
        runtime.jobs.shutdown()

    app = FastAPI(title="edge-runtime", version="0.1.0", lifespan=lifespan,
                  description="On-device continual-learning visual anomaly detection")
    app.state.runtime = runtime
    limit = int(settings.api.max_upload_mb * 2**20) * MAX_FILES_PER_REQUEST
    app.add_middleware(BodyLimitMiddleware, limit=limit)
    for module in (system, products, jobs, inspections):
        app.include_router(module.router)
    app.add_exception_handler(ImageError, _error(422))
    app.add_exception_handler(NotTrainedError, _error(409))
    app.add_exception_handler(JobConflictError, _error(409))
    app.add_exception_handler(TooFewCapturesError, _error(422))
    app.add_exception_handler(CameraError, _error(503))
    app.add_exception_handler(ModelDirError, _error(503))
    app.add_exception_handler(Exception, _unexpected)
    return app
