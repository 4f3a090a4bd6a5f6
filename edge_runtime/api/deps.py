"""Typed dependencies: every endpoint gets its collaborators from here."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam

from edge_runtime import repositories as repo
from edge_runtime.camera import Camera
from edge_runtime.db import Database
from edge_runtime.services.inspection import InspectionService
from edge_runtime.services.jobs import JobManager
from edge_runtime.services.models import ModelRegistry
from edge_runtime.settings import Settings


@dataclass
class Runtime:
    """Everything the daemon holds for its lifetime (app.state.runtime)."""

    settings: Settings
    db: Database
    registry: ModelRegistry
    inspections: InspectionService
    jobs: JobManager
    camera: Camera
    started_at: float
    camera_error: str | None = None
    bridge: object | None = None
    extra: dict = field(default_factory=dict)

    @property
    def captures_dir(self) -> Path:
        return self.settings.data_path / "captures"


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require_token(request: Request, runtime: RuntimeDep) -> None:
    """Mutating endpoints: a bearer token whenever one is configured (always off loopback)."""
    token = runtime.settings.api.token
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), token):
        raise HTTPException(401, "missing or wrong bearer token",
                            headers={"WWW-Authenticate": "Bearer"})


Mutating = Depends(require_token)


SQLITE_MAX_ID = 2**63 - 1
ProductId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]
JobId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]
InspectionId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]


def get_product_or_404(product_id: ProductId, runtime: RuntimeDep) -> dict:
    with runtime.db.connect(write=False) as conn:
        product = repo.get_product(conn, product_id)
    if product is None:
        raise HTTPException(404, f"no product with id {product_id}")
    return product


ProductDep = Annotated[dict, Depends(get_product_or_404)]
