"""/health, /status and /metrics (Prometheus exposition by prometheus_client)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from edge_runtime.api.deps import RuntimeDep, StatusDep

router = APIRouter(tags=["system"])


@router.get("/health")
def health(status: StatusDep) -> dict:
    """ok, or degraded (disk full, damaged state) with the problems; 200 either way: the
    daemon still serves verdicts."""
    return status.health_view()


@router.get("/status")
def status(status: StatusDep) -> dict:
    return status.collect()


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def metrics(runtime: RuntimeDep) -> Response:
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
