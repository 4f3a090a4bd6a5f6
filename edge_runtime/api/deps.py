"""Typed dependencies: every endpoint gets its services from here, and the token rule."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from edge_runtime.services.captures import CaptureService
from edge_runtime.services.heads import HeadService
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.models import ModelRegistry
from edge_runtime.services.products import SQLITE_MAX_ID, ProductService
from edge_runtime.services.removal import ProductRemoval
from edge_runtime.services.review import ReviewService
from edge_runtime.services.runtime import Runtime
from edge_runtime.services.status import StatusService
from edge_runtime.settings import Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _part(attribute: str):
    """A dependency that hands an endpoint one typed part of the runtime."""

    def dependency(runtime: RuntimeDep):
        return getattr(runtime, attribute)

    return dependency


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
ProductsDep = Annotated[ProductService, Depends(_part("products"))]
CapturesDep = Annotated[CaptureService, Depends(_part("captures"))]
InspectionsDep = Annotated[InspectionService, Depends(_part("inspections"))]
JobsDep = Annotated[JobManager, Depends(_part("jobs"))]
ModelsDep = Annotated[ModelRegistry, Depends(_part("models"))]
StatusDep = Annotated[StatusService, Depends(_part("status"))]
ReviewsDep = Annotated[ReviewService, Depends(_part("reviews"))]
RemovalDep = Annotated[ProductRemoval, Depends(_part("removal"))]
HeadsDep = Annotated[HeadService, Depends(_part("heads"))]

bearer = HTTPBearer(auto_error=False, description="api.token, required when one is configured")


def require_token(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Mutating endpoints: a bearer token whenever one is configured (always off loopback)."""
    token = runtime.settings.api.token
    if not token:
        return
    given = credentials.credentials.strip() if credentials else ""
    if not secrets.compare_digest(given.encode(), token.encode()):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Mutating = Depends(require_token)

ProductId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]
JobId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]
InspectionId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]


def get_product(product_id: ProductId, products: ProductsDep) -> dict:
    return products.get(product_id)


ProductDep = Annotated[dict, Depends(get_product)]
