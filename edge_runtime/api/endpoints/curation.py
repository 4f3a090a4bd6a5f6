"""Removing things: a product (and what that means), a capture, a threshold override;
fetching a capture's image back; rolling the model back to an earlier version."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from edge_runtime.api.deps import (
    CapturesDep,
    ModelsDep,
    Mutating,
    ProductDep,
    ProductId,
    ProductsDep,
    RemovalDep,
    RuntimeDep,
)
from edge_runtime.api.schemas import WRITE, ModelVersionOut, ProductDeleted, ProductOut, errors
from edge_runtime.services import events
from edge_runtime.services.products import SQLITE_MAX_ID

router = APIRouter(tags=["products"])
CaptureId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX_ID)]
Version = Annotated[str, PathParam(pattern=r"^v[0-9]{1,18}$", description="e.g. v000003")]
IMAGE = {200: {"content": {"image/png": {}, "image/jpeg": {}}}} | errors(404, 410, 422)


@router.delete("/products/{product_id}", response_model=ProductDeleted,
               dependencies=[Mutating], responses=errors(*WRITE, 404, 409, 507))
def delete_product(product_id: ProductId, removal: RemovalDep) -> ProductDeleted:
    """Deletes captures, jobs, inspections and kept maps now; the live model forgets the
    product at the next training (see ``consequences``). 409 while it trains."""
    return ProductDeleted(**removal.delete(product_id))


@router.delete("/products/{product_id}/threshold", response_model=ProductOut,
               dependencies=[Mutating], responses=errors(*WRITE, 404, 507))
def remove_threshold_override(product: ProductDep, products: ProductsDep) -> ProductOut:
    """The calibrated thresholds decide again."""
    return ProductOut(**products.set_override(product["id"], None, None))


@router.get("/products/{product_id}/captures/{capture_id}/image", response_class=Response,
            responses=IMAGE)
async def capture_image(
    product: ProductDep,
    capture_id: CaptureId,
    captures: CapturesDep,
    thumbnail: Annotated[int, Query(ge=0, le=1024, description="px; 0: the stored file")] = 0,
) -> Response:
    data, media = await run_in_threadpool(captures.image, product["id"], capture_id, thumbnail)
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=86400"})


@router.delete("/products/{product_id}/captures/{capture_id}", status_code=204,
               dependencies=[Mutating], responses=errors(*WRITE, 404, 507))
def delete_capture(product: ProductDep, capture_id: CaptureId,
                   captures: CapturesDep) -> Response:
    """A bad capture: the next training no longer learns it."""
    captures.delete(product["id"], capture_id)
    return Response(status_code=204)


@router.post("/models/{version}/promote", response_model=ModelVersionOut, tags=["models"],
             dependencies=[Mutating], responses=errors(*WRITE, 404, 503))
async def promote(version: Version, models: ModelsDep, runtime: RuntimeDep) -> ModelVersionOut:
    """Roll back (or forward) to a version on disk: verified, then CURRENT switches and the
    session is swapped without failing a request in flight. Products the version never
    learned answer 409 until trained again."""
    live = await run_in_threadpool(models.promote_existing, version)
    runtime.events.publish(events.MODEL, {"version": live.version, "rollback": True,
                                          "products": sorted(live.manifest.thresholds)})
    return next(ModelVersionOut(**v.__dict__) for v in models.versions()
                if v.version == live.version)
